"""Two checkpoints head by head: what fine-tuning changed.

The experiment follows the search-relevance study of a pre-trained and a
fine-tuned BERT cross-encoder (attention differences per head, "enhanced" and
"weakened after fine-tuning", masking of the heads that match terms across
query and title), itself in the line of Kovaleva et al. (2019, "Revealing the
Dark Secrets of BERT", section 5: how attention changes with fine-tuning) and
Clark et al. (2019, "What Does BERT Look At?", section 6: Jensen-Shannon
distances between heads).

Both models see the same tokenisation of the corpus (the first model's
tokenizer; the vocabularies must be equal) and run once each over the corpus,
batch by batch: the first model's attention of one batch is kept layer by
layer while the second model runs on that batch, so peak memory holds one
batch's attention of one model, never the corpus's.

Everything per head is compared generically over "a per-head dict of shares"
(:func:`shares_change`), so the seven pattern scores and any other per-head
dict (such as an attention budget, a head's attention split into where it
goes) go through the same code.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from generator.config import PATTERNS, CompareConfig, Pair
from generator.errors import AtlasError
from generator.model import EncodedPair, LoadedModel, attention_for, forward_layers, length_sorted_batches
from generator.patterns import BatchMasks, PaddedLayouts, ScoreSums, batch_scores
from generator.budget import CATEGORY_NAMES, BudgetSums, batch_budget, category_weights
from generator.scoring import CorpusBudget, HeadSummary, summarise_heads

log = logging.getLogger(__name__)

Head = tuple[int, int]

#: Name of the per-head attention-budget dict on :class:`HeadSummary` (added by
#: the attention-budget work); compared when present, skipped when absent.
BUDGET_ATTRIBUTE = "budget"
#: The budget share whose growth picks the heads masked together (the share of
#: attention going to copies of the query token in the other sentence), and
#: the pattern score used instead while heads carry no budget.
CROSS_SHARE, CROSS_SCORE = "copies_other_sentence", "other_sentence"


# ------------------------------------------------------------ divergence

def js_divergence_rows(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon divergence between attention rows, in bits (log base 2).

    ``JS(P, Q) = 1/2 KL(P || M) + 1/2 KL(Q || M)``, ``M = (P + Q) / 2``, with
    ``0 log 0 = 0``; it lies in [0, 1] and is 0 exactly when the rows are equal
    (Lin 1991, "Divergence measures based on the Shannon entropy"; used on
    attention by Clark et al. 2019, section 6).

    Args:
        p, q: ``[..., T]`` rows of attention probabilities (each sums to 1;
            padding columns are 0 in both and contribute nothing).
    Returns:
        ``[...]`` float32 divergences in bits.
    """
    p, q = p.float(), q.float()
    m = 0.5 * (p + q)

    def kl(a: torch.Tensor) -> torch.Tensor:
        ratio = torch.where(a > 0, a / torch.where(m > 0, m, torch.ones_like(m)), torch.ones_like(a))
        return (a * torch.log2(ratio)).sum(-1)

    return (0.5 * kl(p) + 0.5 * kl(q)).clamp_min(0.0)


# ------------------------------------------------------------ per-head dicts

def shares_change(before: dict[str, float | None] | None,
                  after: dict[str, float | None] | None) -> dict[str, float | None] | None:
    """After minus before of two per-head dicts of shares (scores or budget).

    Args:
        before, after: ``name -> value`` (a value may be ``None``: undefined).
    Returns:
        ``name -> after - before`` over the names of ``before``; ``None`` where
        either side is undefined; ``None`` altogether when either dict is.
    """
    if before is None or after is None:
        return None
    return {k: (None if v is None or after.get(k) is None else float(after[k]) - float(v)) for k, v in before.items()}


@dataclass(frozen=True)
class HeadChange:
    """One head in both models (layer and head 0-indexed).

    ``before_scores`` / ``after_scores``: the seven corpus-mean pattern scores
    (``None`` = undefined); ``score_change``: after minus before.
    ``before_label`` / ``after_label``: the head's label in each model.
    ``js_divergence``: mean Jensen-Shannon divergence (bits, in [0, 1])
    between the two models' attention rows of this head, see
    :func:`compare_models`. ``before_budget`` / ``after_budget`` /
    ``budget_change``: the per-head budget shares when the heads carry them,
    else ``None``.
    """

    layer: int
    head: int
    before_scores: dict[str, float | None]
    after_scores: dict[str, float | None]
    score_change: dict[str, float | None]
    before_label: str
    after_label: str
    js_divergence: float
    before_budget: dict[str, float] | None = None
    after_budget: dict[str, float] | None = None
    budget_change: dict[str, float | None] | None = None

    @property
    def label_changed(self) -> bool:
        return self.before_label != self.after_label

    def as_json(self) -> dict:
        """The ``compare`` object of this head in ``data/heads.json``: the
        other (second) model's scores, label and budget, the changes and the
        JS divergence (floats rounded to 6 decimals)."""
        def rounded(d):
            return None if d is None else {k: (None if v is None else round(v, 6)) for k, v in d.items()}
        return {"pattern": self.after_label, "scores": rounded(self.after_scores),
                "score_change": rounded(self.score_change), "budget": rounded(self.after_budget),
                "budget_change": rounded(self.budget_change), "js_divergence": round(self.js_divergence, 6)}


@dataclass(frozen=True)
class Shift:
    """One large change of one head's share: ``name`` (a pattern or budget
    share), ``before``, ``after`` and ``change`` (after minus before)."""

    layer: int
    head: int
    kind: str  # "score" or "budget"
    name: str
    before: float
    after: float
    change: float


def largest_shifts(changes: list[HeadChange], k: int) -> list[Shift]:
    """The ``k`` largest absolute changes of any head's scores or budget
    shares, largest first (ties in layer-major order)."""
    out = []
    for c in changes:
        for kind, before, after, delta in (("score", c.before_scores, c.after_scores, c.score_change),
                                           ("budget", c.before_budget, c.after_budget, c.budget_change)):
            for name, d in (delta or {}).items():
                if d is not None and math.isfinite(d):
                    out.append(Shift(c.layer, c.head, kind, name, float(before[name]), float(after[name]), d))
    out.sort(key=lambda s: -abs(s.change))
    return out[:k]


# ------------------------------------------------------------ the classification experiment

@dataclass
class ClassificationCompare:
    """Head importance and group masking on the second checkpoint's
    sequence-classification head (objective ``classification``, metric
    accuracy over the corpus labels).

    ``baseline``: accuracy with no head masked. ``ablation``: ``[layers,
    heads]`` accuracy change with that head masked alone (masked minus
    baseline; negative = the head helped). ``group``: the heads masked
    together (those whose cross-sentence share grew most, by ``group_by``),
    ``group_accuracy`` the accuracy with them masked. ``loss_baseline``: mean
    cross-entropy of the true grade (nats per pair) with no head masked;
    ``loss_change``: ``[layers, heads]`` that loss with the head masked minus
    ``loss_baseline`` (positive = the classifier is less sure of the right
    grade without the head; it moves even when accuracy is saturated);
    ``group_loss``: the loss with the group masked. ``cls_head``: the
    last-layer head whose [CLS] row moved most on ``pair_index`` when the
    group is masked; ``cls_before`` / ``cls_after``: its [CLS] attention row
    ``[n]`` (probabilities over ``tokens``) without and with the group masked.
    """

    baseline: float
    ablation: np.ndarray
    group: list[Head]
    group_by: str
    group_accuracy: float
    loss_baseline: float
    loss_change: np.ndarray
    group_loss: float
    cls_head: Head
    pair_index: int
    tokens: tuple[str, ...]
    cls_before: np.ndarray
    cls_after: np.ndarray


@dataclass
class CompareResults:
    """The comparison of two checkpoints over one corpus.

    ``heads``: :class:`HeadChange` per head, layer-major (``layer * heads +
    head``). ``js``: ``[layers, heads]`` the same divergences as an array.
    ``before_heads`` / ``after_heads``: each model's :class:`HeadSummary`.
    ``after_attention``: pair index -> ``[layers, heads, n, n]`` float32
    attention of the second model on the pairs that have pages (the first
    model's is ``AtlasData.showcase.attention``). ``rows``: how many query rows
    the divergences average. ``classification``: the masking experiment when
    the second checkpoint has a classification head, else ``None``.
    """

    before_name: str
    after_name: str
    after_model: str
    heads: list[HeadChange]
    js: np.ndarray
    before_heads: list[HeadSummary]
    after_heads: list[HeadSummary]
    after_attention: dict[int, np.ndarray] = field(default_factory=dict)
    rows: int = 0
    classification: ClassificationCompare | None = None

    def head(self, layer: int, head: int) -> HeadChange:
        return self.heads[layer * self.js.shape[1] + head]

    def to_cache(self) -> tuple[dict[str, np.ndarray], dict]:
        """Arrays (npz) and JSON meta for :mod:`generator.cache` (no pickles)."""
        arrays = {"js": self.js, **{f"att_{i}": a for i, a in self.after_attention.items()}}
        meta = {"before_name": self.before_name, "after_name": self.after_name, "after_model": self.after_model,
                "rows": self.rows, "heads": [dataclasses.asdict(c) for c in self.heads],
                "before_heads": [dataclasses.asdict(h) for h in self.before_heads],
                "after_heads": [dataclasses.asdict(h) for h in self.after_heads], "classification": None}
        cc = self.classification
        if cc is not None:
            for name in ("ablation", "loss_change", "cls_before", "cls_after"):
                arrays[f"cc_{name}"] = getattr(cc, name)
            meta["classification"] = {
                "baseline": cc.baseline, "group": cc.group, "group_by": cc.group_by,
                "group_accuracy": cc.group_accuracy, "loss_baseline": cc.loss_baseline, "group_loss": cc.group_loss,
                "cls_head": cc.cls_head, "pair_index": cc.pair_index, "tokens": list(cc.tokens)}
        return arrays, meta

    @classmethod
    def from_cache(cls, arrays: dict[str, np.ndarray], meta: dict) -> CompareResults:
        """The inverse of :meth:`to_cache`."""
        cc = None
        if meta["classification"] is not None:
            m = meta["classification"]
            cc = ClassificationCompare(
                baseline=m["baseline"], ablation=arrays["cc_ablation"], group=[tuple(h) for h in m["group"]],
                group_by=m["group_by"], group_accuracy=m["group_accuracy"], loss_baseline=m["loss_baseline"],
                loss_change=arrays["cc_loss_change"], group_loss=m["group_loss"], cls_head=tuple(m["cls_head"]),
                pair_index=m["pair_index"], tokens=tuple(m["tokens"]), cls_before=arrays["cc_cls_before"],
                cls_after=arrays["cc_cls_after"])
        return cls(before_name=meta["before_name"], after_name=meta["after_name"], after_model=meta["after_model"],
                   heads=[HeadChange(**c) for c in meta["heads"]], js=arrays["js"],
                   before_heads=[HeadSummary(**h) for h in meta["before_heads"]],
                   after_heads=[HeadSummary(**h) for h in meta["after_heads"]],
                   after_attention={int(k[4:]): v for k, v in arrays.items() if k.startswith("att_")},
                   rows=meta["rows"], classification=cc)

    def label_counts(self) -> list[tuple[str, int, int]]:
        """``(label, heads before, heads after)`` for every label either model uses."""
        from generator.registry import LABELS

        before = [h.label for h in self.before_heads]
        after = [h.label for h in self.after_heads]
        return [(name, before.count(name), after.count(name)) for name in LABELS
                if name in before or name in after]


# ------------------------------------------------------------ the batch run

def check_compatible(before: LoadedModel, after: LoadedModel) -> None:
    """Raise :class:`AtlasError` unless both models have the same shape
    (layers, heads, head size) and the same tokenizer vocabulary; the message
    names both checkpoints and both shapes."""
    a = (before.layers, before.heads, before.head_dim)
    b = (after.layers, after.heads, after.head_dim)
    if a != b:
        raise AtlasError(f"compare.name_or_path: {after.name_or_path!r} has {b[0]} layers x {b[1]} heads of size "
                         f"{b[2]}, model.name_or_path {before.name_or_path!r} has {a[0]} layers x {a[1]} heads of "
                         f"size {a[2]}; only checkpoints of the same shape can be compared head by head")
    va, vb = before.tokenizer.get_vocab(), after.tokenizer.get_vocab()
    if va != vb:
        differ = sorted(set(va.items()) ^ set(vb.items()))[:3]
        raise AtlasError(f"compare.name_or_path: {after.name_or_path!r} has a tokenizer vocabulary of {len(vb)} "
                         f"tokens, model.name_or_path {before.name_or_path!r} one of {len(va)} tokens, and they "
                         f"differ (e.g. {differ}); both models must read the same tokens")


def compare_models(before: LoadedModel, after: LoadedModel, encoded: list[EncodedPair], thresholds: dict[str, float],
                   examples_per_head: int, batch_size: int, page_pairs: list[int] = (), *,
                   before_name: str = "pre-trained", after_name: str = "fine-tuned",
                   progress: bool = True) -> CompareResults:
    """Run both models over the corpus once each, batch by batch, and compare every head.

    The divergence of a head is the mean, over every query row of a real
    (non-special, non-padding) token of every pair, of the Jensen-Shannon
    divergence in bits (:func:`js_divergence_rows`) between the two models'
    attention rows ``A[i, :]`` of that head; [CLS] and [SEP] rows are left out,
    as in the pattern scores (Vig 2019; Clark et al. 2019).

    Args:
        before, after: the two models (:func:`check_compatible` is applied).
        encoded: the corpus tokenised once, by ``before``'s tokenizer.
        thresholds, examples_per_head: as for :func:`generator.scoring.summarise_heads`.
        batch_size: pairs per forward pass.
        page_pairs: pairs whose full attention of ``after`` is kept
            (``[layers, heads, n, n]`` each) for the pages.
    Returns:
        :class:`CompareResults` (without ``classification``).
    Raises:
        AtlasError: shapes or vocabularies differ.
    """
    check_compatible(before, after)
    L, H, P = before.layers, before.heads, len(PATTERNS)
    scores = {side: np.full((len(encoded), L, H, P), np.nan, dtype=np.float32) for side in ("before", "after")}
    sums = {side: ScoreSums.zeros(L, H) for side in ("before", "after")}
    # the raw attention budget of both models (generator.budget), in the same pass
    budgets = {side: BudgetSums.zeros(L, H) for side in ("before", "after")}
    js_total = np.zeros((L, H), dtype=np.float64)
    rows = 0
    with tqdm(total=len(encoded), desc="comparing models", unit="pair", disable=not progress, leave=False) as bar:
        for batch in length_sorted_batches(encoded, batch_size):
            width = max(len(e.input_ids) for e in batch)
            index = [e.index for e in batch]
            kept: list[torch.Tensor] = [None] * L  # type: ignore[list-item]
            out = {side: torch.empty(len(batch), L, H, P) for side in ("before", "after")}
            padded = PaddedLayouts.from_layouts([e.layout for e in batch], width, after.device)
            masks_a = BatchMasks.from_layouts(padded)
            masks_b = masks_a if before.device == after.device else \
                BatchMasks.from_layouts([e.layout for e in batch], width, before.device)
            query = masks_a.query.float()  # [B, T]
            weights = category_weights(padded)
            spent = {side: torch.empty(len(batch), L, H, len(CATEGORY_NAMES)) for side in ("before", "after")}

            def on_before(layer: int, attention: torch.Tensor) -> None:
                out["before"][:, layer] = batch_scores(attention, masks_b).cpu()
                spent["before"][:, layer] = batch_budget(attention.to(after.device), weights).cpu()
                kept[layer] = attention.detach().to(after.device)

            def on_after(layer: int, attention: torch.Tensor) -> None:
                out["after"][:, layer] = batch_scores(attention, masks_a).cpu()
                spent["after"][:, layer] = batch_budget(attention, weights).cpu()
                js = js_divergence_rows(kept[layer], attention)  # [B, H, T]
                js_total[layer] += torch.einsum("bht,bt->h", js, query).double().cpu().numpy()
                kept[layer] = None  # type: ignore[call-overload]

            forward_layers(before, batch, on_before)
            forward_layers(after, batch, on_after)
            rows += int(query.sum().item())
            for side in ("before", "after"):
                s = out[side].numpy()
                scores[side][index] = s
                sums[side].add(s.astype(np.float64))
                budgets[side].add(spent[side].numpy())
            bar.update(len(batch))
    js = js_total / max(rows, 1)
    before_heads = summarise_heads(scores["before"], sums["before"], thresholds, examples_per_head,
                                   budget=CorpusBudget(budgets["before"], None))
    after_heads = summarise_heads(scores["after"], sums["after"], thresholds, examples_per_head,
                                  budget=CorpusBudget(budgets["after"], None))
    changes = []
    for hb, ha in zip(before_heads, after_heads):
        bb, ba = getattr(hb, BUDGET_ATTRIBUTE, None), getattr(ha, BUDGET_ATTRIBUTE, None)
        changes.append(HeadChange(
            layer=hb.layer, head=hb.head, before_scores=hb.scores, after_scores=ha.scores,
            score_change=shares_change(hb.scores, ha.scores), before_label=hb.label, after_label=ha.label,
            js_divergence=float(js[hb.layer, hb.head]), before_budget=bb, after_budget=ba,
            budget_change=shares_change(bb, ba)))
    after_attention = {}
    chosen = [encoded[i] for i in sorted(set(page_pairs))]
    for batch in length_sorted_batches(chosen, batch_size):
        for e, att in zip(batch, attention_for(after, batch)):
            after_attention[e.index] = att.astype(np.float32)
    return CompareResults(before_name=before_name, after_name=after_name, after_model=after.name_or_path,
                          heads=changes, js=js.astype(np.float64), before_heads=before_heads,
                          after_heads=after_heads, after_attention=after_attention, rows=rows)


def grown_heads(changes: list[HeadChange], k: int) -> tuple[list[Head], str]:
    """The ``k`` heads whose cross-sentence attention grew most: by the budget
    share ``copies_other_sentence`` when the heads carry budgets, else by the
    ``other_sentence`` score. Returns the heads (largest growth first) and the
    name of the share used."""
    if all(c.budget_change is not None and c.budget_change.get(CROSS_SHARE) is not None for c in changes):
        name, growth = CROSS_SHARE, [c.budget_change[CROSS_SHARE] for c in changes]
    else:
        name = CROSS_SCORE
        growth = [c.score_change.get(CROSS_SCORE) for c in changes]
    order = sorted(range(len(changes)), key=lambda i: -(growth[i] if growth[i] is not None else -math.inf))
    return [(changes[i].layer, changes[i].head) for i in order[:k]], name


def mean_loss(objective) -> float:
    """Mean per-pair loss of an objective (cross-entropy in nats for
    ``classification``), through its ordinary forward pass, so active
    head masks act on it."""
    total, pairs = 0.0, 0
    with torch.no_grad():
        for batch in objective.loss_batches():
            total += float(batch.forward())
            pairs += len(batch.row_pair)
    return total / max(pairs, 1)


def classification_experiment(task_lm: LoadedModel, pairs: list[Pair], changes: list[HeadChange], group_size: int,
                              batch_size: int, max_length: int) -> ClassificationCompare:
    """Head importance and group masking on a fine-tuned sequence classifier.

    Each head is masked alone (Michel et al. 2019, "Are Sixteen Heads Really
    Better than One?", section 3.1) with the ``classification`` objective
    (accuracy over the corpus labels, and its cross-entropy loss); then the ``group_size`` heads whose
    cross-sentence attention grew most with fine-tuning (:func:`grown_heads`)
    are masked together, and the [CLS] row of the last-layer head that moved
    most is returned before and after.

    Args:
        task_lm: the second checkpoint with its classification head
            (:func:`generator.model.load_model`).
        pairs: the corpus (every ``label`` a class index).
        changes: :attr:`CompareResults.heads`.
    Returns:
        :class:`ClassificationCompare`.
    Raises:
        AtlasError: a label is missing or not a class index (naming the pair).
    """
    from generator.analysis.importance import ablation_importance, mask_heads
    from generator.analysis.objective import ClassificationObjective

    objective = ClassificationObjective(task_lm, pairs, batch_size=batch_size, max_length=max_length)
    ablation = ablation_importance(objective)
    loss_baseline = mean_loss(objective)
    loss_change = ablation.loss_change  # mean over pairs of the change of each pair's cross-entropy
    group, by = grown_heads(changes, group_size)
    with mask_heads(task_lm, group):
        masked = objective.evaluate()
        group_loss = mean_loss(objective)
    last = task_lm.layers - 1
    best = (-1.0, 0, 0, None, None)
    for batch in length_sorted_batches(objective.encoded, batch_size):
        before = attention_for(task_lm, batch)
        with mask_heads(task_lm, group):
            after = attention_for(task_lm, batch)
        for e, b, a in zip(batch, before, after):
            moved = np.abs(a[last, :, 0] - b[last, :, 0]).sum(-1)  # [heads], L1 change of the [CLS] row
            h = int(np.argmax(moved))
            if moved[h] > best[0]:
                best = (float(moved[h]), e.index, h, b[last, h, 0].copy(), a[last, h, 0].copy())
    _, pair_index, h, row_before, row_after = best
    return ClassificationCompare(
        baseline=ablation.baseline.metric, ablation=ablation.metric_change, group=group, group_by=by,
        group_accuracy=masked.metric, loss_baseline=loss_baseline, loss_change=loss_change, group_loss=group_loss,
        cls_head=(last, h), pair_index=pair_index,
        tokens=objective.encoded[pair_index].layout.tokens, cls_before=row_before, cls_after=row_after)


def has_classification_head(name_or_path: str, device: str, dtype: str = "float32") -> LoadedModel | None:
    """The checkpoint loaded with its sequence-classification head, or
    ``None`` (logged) when it has none."""
    from generator.model import load_model

    try:
        return load_model(name_or_path, device, task="classification", dtype=dtype)
    except AtlasError as exc:
        log.info("compare: no classification experiment (%s)", exc)
        return None


def run_compare(ccfg: CompareConfig, before: LoadedModel, pairs: list[Pair], encoded: list[EncodedPair],
                thresholds: dict[str, float], examples_per_head: int, batch_size: int, max_length: int,
                page_pairs: list[int], device: str, progress: bool = True, dtype: str = "float32") -> CompareResults:
    """The comparison a build shows: :func:`compare_models`, then, when the
    second checkpoint has a classification head, every pair has a class-index
    label and ``ccfg.importance`` is on, :func:`classification_experiment`.

    Raises:
        AtlasError: the second checkpoint cannot be loaded or does not match the first.
    """
    from transformers.utils import logging as hf_logging

    from generator.model import load_model

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # a fine-tuned classifier read as a bare encoder: its head is "unexpected"
    try:
        after = load_model(ccfg.name_or_path, device, dtype=dtype)
    finally:
        hf_logging.set_verbosity(level)
    result = compare_models(before, after, encoded, thresholds, examples_per_head, batch_size, page_pairs,
                            before_name=ccfg.before_name, after_name=ccfg.after_name, progress=progress)
    del after
    if ccfg.importance:
        task_lm = has_classification_head(ccfg.name_or_path, device, dtype)
        if task_lm is not None:
            num_labels = int(task_lm.model.config.num_labels)
            bad = [p.id for p in pairs if p.label is None or not float(p.label).is_integer()
                   or not 0 <= int(p.label) < num_labels]
            if bad:
                log.warning("compare: no classification experiment: %d pair(s) have no class-index label in "
                            "0..%d (e.g. %r)", len(bad), num_labels - 1, bad[0])
            else:
                result.classification = classification_experiment(task_lm, pairs, result.heads, ccfg.group_size,
                                                                   batch_size, max_length)
    return result
