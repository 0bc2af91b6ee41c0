"""Run the enabled analyses of ``site_config.yml``'s ``analysis:`` section in
the batch run and pack their results for the cache and the pages.

Which heads matter (Michel, Levy & Neubig 2019, "Are Sixteen Heads Really
Better than One?"), which tokens drive the objective (integrated gradients,
Sundararajan, Taly & Yan 2017, "Axiomatic Attribution for Deep Networks"),
which words affect which (perturbed masking, Wu, Chen, Kao & Liu 2020,
"Perturbed Masking: Parameter-free Probing for Analyzing and Interpreting
BERT"), and where heads sit relative to each other (Clark, Khandelwal, Levy &
Manning 2019, "What Does BERT Look At?", section 6). Every analysis that does
not run is named in :attr:`AnalysisResults.skipped` with the reason, and every
one that runs names its input (joint pair or each sentence alone) in
:attr:`AnalysisResults.inputs`.
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


# the arrays of AnalysisResults (stored in the cache's npz, the rest in JSON)
_ARRAYS = ("ablation_effect", "ablation_effect_ci", "loss_change", "loss_change_ci", "loss_change_overlaps_zero",
           "metric_change", "metric_change_ci", "metric_change_overlaps_zero", "ablation_metric", "gradient_raw",
           "gradient_layer_normalized", "head_coords", "objective_values")
_SCALARS = ("objective", "metric_name", "metric_directed", "higher_is_better", "baseline", "rank_correlation",
            "bootstrap_resamples", "bootstrap_level", "impact_layer", "impact_mask_token", "impact_note",
            "head_map_pairs", "head_map_sample", "objective_pairs", "objective_sample", "objective_max_length",
            "inputs", "skipped",
            "timings")


@dataclass
class AnalysisResults:
    """Everything the importance, pair and home pages show, fully computed.

    Arrays over heads are ``[layers, heads]`` (``[layers, heads, 2]`` for an
    interval ``[low, high]``); per-pair dicts are keyed by corpus index. Head
    masking follows Michel et al. (2019), "Are Sixteen Heads Really Better than
    One?"; see :class:`generator.analysis.importance.AblationImportance`.

    Attributes:
        objective: ``"similarity"``, ``"mlm"`` or ``"classification"``.
        metric_name: the corpus metric (``"spearman"``, ``"mean_similarity"``,
            ``"pll_per_token"``, ``"accuracy"``).
        metric_directed: whether the metric has a better direction (False for
            the mean similarity of unlabelled pairs).
        higher_is_better: the metric's direction.
        baseline: the corpus metric with no head masked.
        ablation_effect: ``mean_p |L'_p - L_p|``, the mean over pairs of the
            absolute change of the per-pair loss when the head alone is masked
            (units of the objective's loss). Like for like with ``gradient_raw``.
        ablation_effect_ci: its bootstrap interval ``[layers, heads, 2]``.
        loss_change: ``mean_p (L'_p - L_p)``, signed (> 0: masking raises the
            loss, the head helps; < 0: the head hurts). ``loss_change_ci`` its
            interval; ``loss_change_overlaps_zero`` ``[layers, heads]`` bool.
        metric_change: signed change of the corpus metric when the head alone
            is masked (e.g. of Spearman's rho), recomputed per resample for
            ``metric_change_ci``; ``metric_change_overlaps_zero`` bool.
        ablation_metric: the corpus metric with the head masked.
        gradient_raw: Michel et al.'s ``I_h = E_p |dL_p/dxi_h|`` (eq. 3), loss
            units per unit gate; comparable across layers.
        gradient_layer_normalized: ``gradient_raw`` divided by the L2 norm of
            its layer's row (their section 4.2): only a within-layer view.
        rank_correlation: Spearman's rho over heads between ``ablation_effect``
            and ``gradient_raw`` (the same quantity, measured two ways).
        bootstrap_resamples / bootstrap_level: of the intervals (e.g. 1000, 0.95).
        groups: heads masked together (:class:`GroupResult`).
        attributions: pair index -> integrated gradients (``tokens``,
            ``attributions`` ``[n]``, ``value`` f(x), ``baseline_value``
            f(x'), ``total``, ``delta``, ``relative_error``, ``n_steps``,
            ``how_to_read`` one sentence).
        impact: pair index -> ``[n, n]`` perturbed-masking impact matrix (Wu et
            al. 2020); ``impact_layer`` its layer; ``impact_mask_token`` the
            token that stood in for masked words; ``impact_note`` one sentence
            on why the reading is weaker when the checkpoint has no masked-LM
            head (None when it has one).
        head_coords: ``[layers * heads, 2]`` MDS map of the heads (Clark et al.
            2019); ``head_map_pairs`` how many pairs it averages over;
            ``head_map_sample`` their corpus indices (a seeded random sample).
        objective_pairs: how many pairs the objective ran on.
        objective_max_length: the most tokens the objective encodes per text
            (the model's own position limit, not ``model.max_length``).
        objective_sample: their corpus indices (all pairs, or an evenly
            spaced sample of ``analysis.objective_pairs``).
        objective_values: ``[objective_pairs]`` the model's own per-pair value
            of the objective with no head masked, in ``objective_sample``
            order (for ``similarity``: the cosine similarity of the two
            sentences' embeddings, as the model is used); ``None`` when
            neither head masking nor group masking ran.
        inputs: analysis name -> ``{"input": "joint" | "separate", "reason":
            one sentence}``: which input each analysis that ran used, and why.
        skipped: analysis name -> one sentence on why it did not run.
        timings: seconds per analysis.
    """

    objective: str
    metric_name: str
    metric_directed: bool = True
    higher_is_better: bool = True
    baseline: float | None = None
    ablation_effect: np.ndarray | None = None
    ablation_effect_ci: np.ndarray | None = None
    loss_change: np.ndarray | None = None
    loss_change_ci: np.ndarray | None = None
    loss_change_overlaps_zero: np.ndarray | None = None
    metric_change: np.ndarray | None = None
    metric_change_ci: np.ndarray | None = None
    metric_change_overlaps_zero: np.ndarray | None = None
    ablation_metric: np.ndarray | None = None
    gradient_raw: np.ndarray | None = None
    gradient_layer_normalized: np.ndarray | None = None
    rank_correlation: float | None = None
    bootstrap_resamples: int = 0
    bootstrap_level: float = 0.95
    groups: list[GroupResult] = field(default_factory=list)
    attributions: dict[int, dict] = field(default_factory=dict)
    impact: dict[int, np.ndarray] = field(default_factory=dict)
    impact_layer: int | None = None
    impact_mask_token: str | None = None
    impact_note: str | None = None
    head_coords: np.ndarray | None = None
    head_map_pairs: int = 0
    head_map_sample: list[int] = field(default_factory=list)
    objective_pairs: int = 0
    objective_sample: list[int] = field(default_factory=list)
    objective_max_length: int | None = None
    objective_values: np.ndarray | None = None
    inputs: dict[str, dict[str, str]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    # ---- names the pages used before the like-for-like split; they read the
    # fields above (no second definition of either quantity)
    @property
    def ablation(self) -> np.ndarray | None:
        """Same as :attr:`metric_change` (the signed change of the corpus metric)."""
        return self.metric_change

    @property
    def gradient(self) -> np.ndarray | None:
        """Same as :attr:`gradient_layer_normalized` (a within-layer view only)."""
        return self.gradient_layer_normalized

    def importance_order(self) -> list[tuple[int, int]]:
        """Every head, the one whose masking hurts most first
        (:func:`generator.analysis.importance.importance_order`); empty when
        ablation did not run."""
        from generator.analysis.importance import importance_order

        if self.metric_change is None or self.ablation_effect is None:
            return []
        return importance_order(self.metric_change, self.ablation_effect, directed=self.metric_directed,
                                higher_is_better=self.higher_is_better)

    # ---- cache round trip (arrays in npz, the rest in JSON; no pickles)
    def to_cache(self) -> tuple[dict[str, np.ndarray], dict]:
        arrays: dict[str, np.ndarray] = {}
        for name in _ARRAYS:
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
        meta = {name: getattr(self, name) for name in _SCALARS}
        meta.update(groups=groups, attributions=attributions)
        return arrays, meta

    @classmethod
    def from_cache(cls, arrays: dict[str, np.ndarray], meta: dict) -> AnalysisResults:
        out = cls(**{name: meta[name] for name in _SCALARS})
        for name in _ARRAYS:
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

    def objective_value(self, index: int) -> float | None:
        """The model's own value of the objective on corpus pair ``index``
        (e.g. the cosine similarity of its two sentences), or ``None`` when
        the pair is not in :attr:`objective_sample` or nothing evaluated it."""
        if self.objective_values is None or index not in self.objective_sample:
            return None
        return float(self.objective_values[self.objective_sample.index(index)])

    def importance_of(self, layer: int, head: int) -> dict | None:
        """One head's importance for heads.json, each field named by its quantity:
        ``objective``, ``metric`` (the corpus metric's name),
        ``ablation_effect`` (mean over pairs of |change of the per-pair loss|
        when the head alone is masked), ``ablation_ci`` ([low, high] bootstrap
        interval of it), ``loss_change`` (signed mean change of the per-pair
        loss) with ``loss_change_ci``, ``metric_change`` (signed change of the
        corpus metric) with ``metric_change_ci``, ``gradient`` (Michel et al.'s
        raw ``E|dL/dxi|``), ``gradient_layer_normalized``, ``ci_level``.
        None when ablation did not run."""
        if self.ablation_effect is None:
            return None

        def num(a):
            return None if a is None or np.isnan(a[layer, head]) else round(float(a[layer, head]), 6)

        def ci(a):
            return None if a is None or np.isnan(a[layer, head]).any() else [round(float(x), 6) for x in a[layer, head]]

        return {"objective": self.objective, "metric": self.metric_name,
                "ablation_effect": num(self.ablation_effect), "ablation_ci": ci(self.ablation_effect_ci),
                "loss_change": num(self.loss_change), "loss_change_ci": ci(self.loss_change_ci),
                "metric_change": num(self.metric_change), "metric_change_ci": ci(self.metric_change_ci),
                "gradient": num(self.gradient_raw), "gradient_layer_normalized": num(self.gradient_layer_normalized),
                "ci_level": self.bootstrap_level}


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


def model_position_limit(lm: LoadedModel) -> int:
    """The most tokens the objectives encode per text: the model's learned
    positions (``config.max_position_embeddings`` through
    :func:`generator.model.effective_max_length`, which removes RoBERTa's
    offset), and, for a sentence-transformers checkpoint, its own
    ``max_seq_length`` (``sentence_bert_config.json``: 256 for
    all-MiniLM-L6-v2), the length the model is used at.

    Args:
        lm: the model.

    Returns:
        The limit in tokens, special tokens included.
    """
    import json
    from pathlib import Path

    from generator.model import effective_max_length, resolve_model_path

    limit = effective_max_length(lm, int(getattr(lm.model.config, "max_position_embeddings", 512)))
    st_config = Path(resolve_model_path(lm.name_or_path)).expanduser() / "sentence_bert_config.json"
    if st_config.is_file():
        try:
            seq = json.loads(st_config.read_text(encoding="utf-8")).get("max_seq_length")
        except (OSError, ValueError):
            seq = None
        if isinstance(seq, int) and 0 < seq < limit:
            limit = seq
    return limit


def head_map_sample(n: int, size: int, seed: int) -> list[int]:
    """The corpus indices the head map averages over: ``min(size, n)`` drawn
    without replacement by ``numpy.random.default_rng(seed)``, sorted. It
    depends on nothing else (not on which pairs get pages)."""
    if n <= size:
        return list(range(n))
    return sorted(int(i) for i in np.random.default_rng(seed).choice(n, size=size, replace=False))


#: which input each analysis reads, and why (one sentence each, for the pages)
_JOINT_REASON = ("the pair is encoded once as [CLS] a [SEP] b [SEP], the input the attention pages show, so "
                 "tokens of one sentence can attend to the other")
_SEPARATE_REASON = ("each sentence is encoded alone as [CLS] s [SEP] and the two mean-pooled embeddings are "
                    "compared, as a bi-encoder such as all-MiniLM-L6-v2 is used, so no head sees the other sentence")


def _input_note(kind: str, what: str) -> dict[str, str]:
    return {"input": kind, "reason": f"{what}: {_JOINT_REASON if kind == 'joint' else _SEPARATE_REASON}."}


def run_analyses(acfg: AnalysisConfig, lm: LoadedModel, task_lm: LoadedModel, pairs: list[Pair],
                 encoded: list[EncodedPair], labels: np.ndarray, per_pair: list[int],
                 batch_size: int) -> AnalysisResults:
    """Compute every enabled analysis.

    Args:
        acfg: the ``analysis:`` settings.
        lm: the encoder whose attention the atlas shows.
        task_lm: the model the objective needs (the same for ``similarity``;
            one with a masked-LM or classification head otherwise).
        pairs: the corpus; ``encoded``: its joint encodings
            (:func:`generator.model.encode_pairs`).
        labels: ``[layers, heads]`` head labels (for group masking).
        per_pair: the pairs that get integrated gradients and perturbed masking.
        batch_size: pairs per forward pass.

    Returns:
        :class:`AnalysisResults`, with ``skipped`` naming every analysis that
        did not run and why.
    """
    from generator.analysis import importance
    from generator.analysis.objective import make_objective

    t_all = time.perf_counter()
    # the objective embeds sentences up to the model's own position limit, not
    # model.max_length (which bounds the joint pairs the atlas shows)
    max_length = model_position_limit(task_lm)
    # head masking re-evaluates the objective once per head: on a large corpus
    # it runs on an evenly spaced sample of at most objective_pairs pairs
    sample = objective_sample(len(pairs), acfg.objective_pairs)
    options = {"input": acfg.input} if acfg.objective == "similarity" else {}
    objective = make_objective(acfg.objective, task_lm, [pairs[i] for i in sample], batch_size=batch_size,
                               max_length=max_length, **options)
    sample_encoded = [encoded[i] for i in sample]
    res = AnalysisResults(objective=acfg.objective, metric_name="", objective_pairs=len(sample),
                          objective_sample=list(sample), objective_max_length=int(max_length),
                          bootstrap_resamples=acfg.bootstrap_resamples)
    objective_input = acfg.input if acfg.objective == "similarity" else "joint"
    off = "switched off by a setting (analysis.{} = false)"
    base = None
    if acfg.importance or acfg.group_masking:
        t = time.perf_counter()
        base = objective.evaluate()
        res.metric_name, res.baseline = base.metric_name, float(base.metric)
        res.objective_values = np.asarray(base.per_pair, dtype=np.float64)
        res.metric_directed = base.metric_name != "mean_similarity"
        res.higher_is_better = bool(base.higher_is_better)
        res.timings["objective_s"] = time.perf_counter() - t
    if acfg.importance:
        t = time.perf_counter()
        abl = importance.ablation_importance(objective)
        res.ablation_effect, res.loss_change, res.metric_change = abl.effect, abl.loss_change, abl.metric_change
        res.ablation_metric = abl.metric
        res.timings["ablation_s"] = time.perf_counter() - t
        t = time.perf_counter()
        ci = importance.bootstrap_ablation(abl, labels=getattr(objective, "labels", None)
                                           if base.metric_name == "spearman" else None,
                                           resamples=acfg.bootstrap_resamples, seed=acfg.seed)
        res.ablation_effect_ci, res.loss_change_ci, res.metric_change_ci = ci.effect, ci.loss_change, ci.metric_change
        res.loss_change_overlaps_zero = ci.loss_change_overlaps_zero
        res.metric_change_overlaps_zero = ci.metric_change_overlaps_zero
        res.bootstrap_level = ci.level
        res.timings["bootstrap_s"] = time.perf_counter() - t
        t = time.perf_counter()
        grad = importance.gradient_importance(objective)
        res.gradient_raw, res.gradient_layer_normalized = grad.raw, grad.normalized
        res.rank_correlation = importance.rank_correlation(abl.effect, grad.raw)
        res.timings["gradient_s"] = time.perf_counter() - t
        res.inputs["importance"] = _input_note(objective_input, "head importance")
    else:
        res.skipped["importance"] = off.format("importance")
    if acfg.group_masking:
        t = time.perf_counter()
        groups: list[tuple[str, list[tuple[int, int]]]] = []
        for name in LABELS:
            if name == MIXED:
                continue
            heads = importance.heads_with_label(labels, name)
            if heads and len(heads) < labels.size:
                groups.append((f"all {name} heads", heads))
        if res.metric_change is not None:
            groups.append(("the 5 heads whose masking hurts most", res.importance_order()[:5]))
        results = importance.group_masking_all(objective, sample_encoded, [heads for _, heads in groups],
                                               batch_size=batch_size, baseline=base)
        for (name, _), g in zip(groups, results):
            res.groups.append(GroupResult(name=name, heads=[tuple(h) for h in g.heads], change=float(g.change),
                                          masked_metric=float(g.masked.metric), top=tuple(g.top),
                                          top_movement=float(g.movement[g.top]), pair_index=g.pair_index,
                                          before=g.before.astype(np.float32), after=g.after.astype(np.float32)))
        res.timings["group_masking_s"] = time.perf_counter() - t
        res.inputs["group_masking"] = {
            "input": objective_input,
            "reason": _input_note(objective_input, "the objective")["reason"] + " The attention shift is read on "
                      "the joint input [CLS] a [SEP] b [SEP], as the attention pages show it."}
    else:
        res.skipped["group_masking"] = off.format("group_masking")
    if not acfg.attribution:
        res.skipped["attribution"] = off.format("attribution")
    elif acfg.objective != "similarity":
        res.skipped["attribution"] = (f"integrated gradients explain the similarity of a pair; the objective is "
                                      f"{acfg.objective!r}, so attribution did not run")
    else:
        from generator.analysis.attribution import integrated_gradients

        t = time.perf_counter()
        for i in per_pair:
            a = integrated_gradients(lm, pairs[i], n_steps=acfg.attribution_steps, max_length=max_length)
            res.attributions[i] = {
                "tokens": list(a.tokens), "attributions": a.attributions.astype(np.float64), "value": a.value,
                "baseline_value": a.baseline_value, "total": a.total, "delta": a.delta,
                "relative_error": a.relative_error, "n_steps": a.n_steps,
                "how_to_read": (f"The shares of the tokens add up to f(x) - f(baseline) = {a.value:.3f} - "
                                f"{a.baseline_value:.3f} = {a.value - a.baseline_value:+.3f}, where the baseline "
                                f"(every word replaced by padding) already scores f(baseline) = "
                                f"{a.baseline_value:.3f}: a positive share means the token raises the similarity "
                                f"relative to that baseline, a negative share that it lowers it.")}
        res.timings["attribution_s"] = time.perf_counter() - t
        res.inputs["attribution"] = _input_note("separate", "integrated gradients of the similarity")
    if acfg.perturbed_masking is False:
        res.skipped["perturbed_masking"] = off.format("perturbed_masking")
    else:
        from generator.analysis.perturbed import NO_MLM_HEAD_NOTE, impact_matrix, masked_lm_head

        evidence = masked_lm_head(lm)
        if evidence is None and acfg.perturbed_masking == "auto":
            res.skipped["perturbed_masking"] = (
                f"{lm.name_or_path} has no masked-LM head, so it was never trained to fill {lm.tokenizer.mask_token} "
                "and Wu et al.'s reading of a masked word as 'inferred from its context' does not hold; set "
                "analysis.perturbed_masking: true to run it anyway")
        elif lm.tokenizer.mask_token_id is None:
            res.skipped["perturbed_masking"] = f"the tokenizer of {lm.name_or_path} has no mask token"
        else:
            t = time.perf_counter()
            res.impact_layer = acfg.perturbed_layer % lm.layers
            res.impact_mask_token = lm.tokenizer.mask_token
            res.impact_note = None if evidence is not None else NO_MLM_HEAD_NOTE.format(token=lm.tokenizer.mask_token)
            for i in per_pair:
                res.impact[i] = impact_matrix(lm, encoded[i], layer=acfg.perturbed_layer).astype(np.float32)
            res.timings["perturbed_s"] = time.perf_counter() - t
            res.inputs["perturbed_masking"] = _input_note("joint", "perturbed masking")
    if not acfg.head_map:
        res.skipped["head_map"] = off.format("head_map")
    else:
        from generator.analysis.headmap import head_distances, head_map
        from generator.model import attention_for, length_sorted_batches

        t = time.perf_counter()
        chosen = head_map_sample(len(pairs), acfg.head_map_pairs, acfg.seed)
        # one batch's attention alive at a time: head_distances is a mean over
        # every query token, so batches combine weighted by their query counts
        total, queries = 0.0, 0
        for batch in length_sorted_batches([encoded[i] for i in chosen], batch_size):
            n = sum(len(e.input_ids) for e in batch)
            total = total + head_distances(attention_for(lm, batch)) * n
            queries += n
        res.head_coords = head_map(total / queries).astype(np.float32)
        res.head_map_pairs, res.head_map_sample = len(chosen), chosen
        res.timings["head_map_s"] = time.perf_counter() - t
        res.inputs["head_map"] = _input_note("joint", "the head map")
    res.timings["analysis_s"] = time.perf_counter() - t_all
    return res
