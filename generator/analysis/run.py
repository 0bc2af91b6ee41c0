"""Run the enabled analyses of ``site_config.yml``'s ``analysis:`` section in
the batch run and pack their results for the cache and the pages.

Which heads matter (Michel et al. 2019; the seeds' article 001), which tokens
drive the objective (integrated gradients, Sundararajan et al. 2017) and
which tokens affect which (perturbed masking, Wu et al. 2020; article 004),
and where heads sit relative to each other (Clark et al. 2019, §6).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from generator.config import AnalysisConfig, Pair
from generator.model import EncodedPair, LoadedModel
from generator.patterns import LABELS, MIXED

log = logging.getLogger(__name__)


@dataclass
class GroupResult:
    """One group of heads masked together."""

    name: str
    heads: list[tuple[int, int]]
    change: float
    masked_metric: float
    top: tuple[int, int]
    top_movement: float
    pair_index: int
    before: np.ndarray
    after: np.ndarray


@dataclass
class AnalysisResults:
    """Everything the importance, pair and home pages show. Arrays over heads
    are ``[layers, heads]``; per-pair arrays are keyed by corpus index."""

    objective: str
    metric_name: str
    baseline: float | None = None
    ablation: np.ndarray | None = None
    ablation_metric: np.ndarray | None = None
    gradient: np.ndarray | None = None
    gradient_raw: np.ndarray | None = None
    rank_correlation: float | None = None
    groups: list[GroupResult] = field(default_factory=list)
    attributions: dict[int, dict] = field(default_factory=dict)
    impact: dict[int, np.ndarray] = field(default_factory=dict)
    impact_layer: int | None = None
    head_coords: np.ndarray | None = None
    head_map_pairs: int = 0
    objective_pairs: int = 0
    timings: dict[str, float] = field(default_factory=dict)

    # ---- cache round trip (arrays in npz, the rest in JSON; no pickles)
    def to_cache(self) -> tuple[dict[str, np.ndarray], dict]:
        arrays: dict[str, np.ndarray] = {}
        for name in ("ablation", "ablation_metric", "gradient", "gradient_raw", "head_coords"):
            value = getattr(self, name)
            if value is not None:
                arrays[name] = value
        for i, m in self.impact.items():
            arrays[f"impact_{i}"] = m
        groups = []
        for k, g in enumerate(self.groups):
            arrays[f"group_{k}_before"], arrays[f"group_{k}_after"] = g.before, g.after
            groups.append({"name": g.name, "heads": g.heads, "change": g.change, "masked_metric": g.masked_metric,
                           "top": list(g.top), "top_movement": g.top_movement, "pair_index": g.pair_index})
        attributions = {}
        for i, a in self.attributions.items():
            arrays[f"attr_{i}"] = a["attributions"]
            attributions[str(i)] = {k: v for k, v in a.items() if k != "attributions"}
        meta = {"objective": self.objective, "metric_name": self.metric_name, "baseline": self.baseline,
                "rank_correlation": self.rank_correlation, "groups": groups, "attributions": attributions,
                "impact_layer": self.impact_layer, "head_map_pairs": self.head_map_pairs,
                "objective_pairs": self.objective_pairs, "timings": self.timings}
        return arrays, meta

    @classmethod
    def from_cache(cls, arrays: dict[str, np.ndarray], meta: dict) -> AnalysisResults:
        out = cls(objective=meta["objective"], metric_name=meta["metric_name"], baseline=meta["baseline"],
                  rank_correlation=meta["rank_correlation"], impact_layer=meta["impact_layer"],
                  head_map_pairs=meta["head_map_pairs"], objective_pairs=meta["objective_pairs"],
                  timings=meta["timings"])
        for name in ("ablation", "ablation_metric", "gradient", "gradient_raw", "head_coords"):
            setattr(out, name, arrays.get(name))
        out.impact = {int(k[7:]): v for k, v in arrays.items() if k.startswith("impact_")}
        for k, g in enumerate(meta["groups"]):
            out.groups.append(GroupResult(name=g["name"], heads=[tuple(h) for h in g["heads"]], change=g["change"],
                                          masked_metric=g["masked_metric"], top=tuple(g["top"]),
                                          top_movement=g["top_movement"], pair_index=g["pair_index"],
                                          before=arrays[f"group_{k}_before"], after=arrays[f"group_{k}_after"]))
        for key, a in meta["attributions"].items():
            out.attributions[int(key)] = {**a, "attributions": arrays[f"attr_{key}"]}
        return out

    def importance_of(self, layer: int, head: int) -> dict | None:
        """``{"objective", "ablation", "gradient"}`` of one head for heads.json."""
        if self.ablation is None:
            return None
        return {"objective": self.objective, "ablation": round(float(self.ablation[layer, head]), 6),
                "gradient": None if self.gradient is None else round(float(self.gradient[layer, head]), 6)}


def objective_sample(n: int, limit: int) -> list[int]:
    """At most ``limit`` corpus indices, evenly spaced over ``range(n)`` (all when ``n <= limit``)."""
    if n <= limit:
        return list(range(n))
    return sorted({int(round(x)) for x in np.linspace(0, n - 1, limit)})


def analysis_pairs(heads, pair_indices: list[int], limit: int) -> list[int]:
    """The pairs that get per-pair analyses: those used as examples by most
    heads first (ties by corpus order), at most ``limit``."""
    uses: dict[int, int] = {}
    for h in heads:
        for i in h.examples:
            uses[i] = uses.get(i, 0) + 1
    ranked = sorted(pair_indices, key=lambda i: (-uses.get(i, 0), i))
    return ranked[:limit]


def run_analyses(acfg: AnalysisConfig, lm: LoadedModel, task_lm: LoadedModel, pairs: list[Pair],
                 encoded: list[EncodedPair], labels: np.ndarray, attention: dict[int, np.ndarray],
                 per_pair: list[int], max_length: int, batch_size: int) -> AnalysisResults:
    """Compute every enabled analysis.

    ``lm``: the encoder whose attention the atlas shows; ``task_lm``: the
    model the objective needs (the same for ``similarity``; a masked-LM or
    classification head otherwise). ``labels``: ``[layers, heads]`` head
    labels (for group masking); ``attention``: pair index -> ``[layers,
    heads, n, n]`` of the example pairs (for the head map); ``per_pair``: the
    pairs that get integrated gradients and perturbed masking.
    """
    from generator.analysis import importance
    from generator.analysis.objective import make_objective

    t_all = time.perf_counter()
    # head masking re-evaluates the objective once per head: on a large corpus
    # it runs on an evenly spaced sample of at most objective_pairs pairs
    sample = objective_sample(len(pairs), acfg.objective_pairs)
    objective = make_objective(acfg.objective, task_lm, [pairs[i] for i in sample], batch_size=batch_size,
                               max_length=max_length)
    sample_encoded = [encoded[i] for i in sample]
    res = AnalysisResults(objective=acfg.objective, metric_name="", objective_pairs=len(sample))
    if acfg.importance or acfg.group_masking:
        t = time.perf_counter()
        base = objective.evaluate()
        res.metric_name, res.baseline = base.metric_name, float(base.metric)
        res.timings["objective_s"] = time.perf_counter() - t
    if acfg.importance:
        t = time.perf_counter()
        abl = importance.ablation_importance(objective)
        res.ablation, res.ablation_metric = abl.change, abl.metric
        res.timings["ablation_s"] = time.perf_counter() - t
        t = time.perf_counter()
        grad = importance.gradient_importance(objective)
        res.gradient, res.gradient_raw = grad.normalized, grad.raw
        res.rank_correlation = importance.rank_correlation(abl.change, grad.normalized)
        res.timings["gradient_s"] = time.perf_counter() - t
    if acfg.group_masking:
        t = time.perf_counter()
        groups: list[tuple[str, list[tuple[int, int]]]] = []
        for name in LABELS:
            if name == MIXED:
                continue
            heads = importance.heads_with_label(labels, name)
            if heads and len(heads) < labels.size:
                groups.append((f"all {name} heads", heads))
        if res.ablation is not None:
            # "hurts most": the largest drop of a metric that should be high (or
            # rise of one that should be low); for the unsigned mean change, the largest
            signed = res.ablation.reshape(-1)
            if base.metric_name == "mean_similarity" or not base.higher_is_better:
                signed = -signed
            order = np.argsort(signed, kind="stable")
            top5 = [divmod(int(k), labels.shape[1]) for k in order[:5]]
            groups.append(("the 5 heads whose masking hurts most", top5))
        for name, heads in groups:
            g = importance.group_masking(objective, sample_encoded, heads, batch_size=batch_size)
            res.groups.append(GroupResult(name=name, heads=[tuple(h) for h in g.heads], change=float(g.change),
                                          masked_metric=float(g.masked.metric), top=tuple(g.top),
                                          top_movement=float(g.movement[g.top]), pair_index=g.pair_index,
                                          before=g.before.astype(np.float32), after=g.after.astype(np.float32)))
        res.timings["group_masking_s"] = time.perf_counter() - t
    if acfg.attribution and acfg.objective == "similarity":
        from generator.analysis.attribution import integrated_gradients

        t = time.perf_counter()
        for i in per_pair:
            a = integrated_gradients(lm, pairs[i], n_steps=acfg.attribution_steps, max_length=max_length)
            res.attributions[i] = {"tokens": list(a.tokens), "attributions": a.attributions.astype(np.float64),
                                   "value": a.value, "baseline_value": a.baseline_value, "total": a.total,
                                   "delta": a.delta, "relative_error": a.relative_error, "n_steps": a.n_steps}
        res.timings["attribution_s"] = time.perf_counter() - t
    if acfg.perturbed_masking:
        from generator.analysis.perturbed import impact_matrix

        t = time.perf_counter()
        res.impact_layer = acfg.perturbed_layer if acfg.perturbed_layer >= 0 else lm.layers + acfg.perturbed_layer
        for i in per_pair:
            res.impact[i] = impact_matrix(lm, encoded[i], layer=acfg.perturbed_layer).astype(np.float32)
        res.timings["perturbed_s"] = time.perf_counter() - t
    if acfg.head_map and len(attention) >= 1:
        from generator.analysis.headmap import head_distances, head_map

        t = time.perf_counter()
        chosen = sorted(attention)[:50]
        res.head_coords = head_map(head_distances([attention[i] for i in chosen])).astype(np.float32)
        res.head_map_pairs = len(chosen)
        res.timings["head_map_s"] = time.perf_counter() - t
    res.timings["analysis_s"] = time.perf_counter() - t_all
    return res
