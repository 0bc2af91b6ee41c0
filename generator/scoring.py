"""The batch run: stream the corpus through the model, score every head on
every pair as each layer's attention comes out (the patterns of Vig 2019, "A
Multiscale Visualization of Attention in the Transformer Model", and Clark et
al. 2019, "What Does BERT Look At? An Analysis of BERT's Attention", section
3; see :mod:`generator.patterns`), and keep only what the site shows
(per-pair scores, corpus sums, and the attention of the example pairs).

Peak memory holds one layer's attention of one batch, the per-pair score
table ``[pairs, layers, heads, 7]`` (float32, 2 KB per pair for 72 heads) and
the attention of the example pairs, never the whole corpus's attention.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from generator.budget import CATEGORY_NAMES, C, BudgetSums, batch_budget, category_weights
from generator.config import PATTERNS
from generator.describe import describe_head
from generator.architectures import LayerAttention
from generator.model import EncodedPair, LoadedModel, attention_for, capture_query_key, forward_capture, length_sorted_batches
from generator.patterns import MIXED, BatchMasks, PaddedLayouts, ScoreSums, batch_scores, classify, consistency, nearest_pattern, top_pairs
from generator.value_norms import output_gram, value_norms, value_weighted

log = logging.getLogger(__name__)


@dataclass
class BatchResult:
    """What one padded batch of ``B`` pairs gives, in the batch's order.

    ``scores``: ``[B, layers, heads, 7]`` float32 (NaN = undefined);
    ``budget``, ``value_budget``: ``[B, layers, heads, 11]`` float32 shares of
    the attention budget (:data:`generator.budget.CATEGORIES`), raw and
    value-weighted; ``None`` when not computed.
    """

    scores: np.ndarray
    budget: np.ndarray | None = None
    value_budget: np.ndarray | None = None


def output_grams(lm: LoadedModel) -> list[torch.Tensor]:
    """``[heads, d, d]`` Gram matrices ``W_O,h W_O,h^T`` of every layer's
    attention output projection (:func:`generator.value_norms.output_gram`),
    on the model's device."""
    return [output_gram(lm.attention_output(layer).weight, lm.heads).to(lm.device) for layer in range(lm.layers)]


def score_batch_all(lm: LoadedModel, batch: list[EncodedPair], budget: bool = True,
                    grams: list[torch.Tensor] | None = None) -> BatchResult:
    """Scores, attention budgets and value-weighted budgets of every head on
    each pair of one padded batch, in one forward pass.

    The category map of the batch (:func:`generator.budget.category_weights`)
    is built once and shared by every layer. The value norms ``||f_h(x_j)||``
    (Kobayashi et al. 2020, "Attention is Not Only a Weight: Analyzing
    Transformers with Vector Norms", section 3) come from the values each
    layer's attention call receives (:func:`generator.model.forward_capture`),
    as that layer runs.

    Args:
        lm: the model.
        batch: the pairs (padded to the longest).
        budget: also compute the budgets (raw and value-weighted).
        grams: :func:`output_grams` of ``lm`` (computed here when ``None``).

    Returns:
        The batch's :class:`BatchResult`.
    """
    width = max(len(e.input_ids) for e in batch)
    padded = PaddedLayouts.from_layouts([e.layout for e in batch], width, lm.device)
    masks = BatchMasks.from_layouts(padded)
    B = len(batch)
    # results stay on the model's device until the batch is done: one copy back, no sync per layer
    out = torch.empty(B, lm.layers, lm.heads, len(PATTERNS), device=lm.device)
    raw = torch.empty(B, lm.layers, lm.heads, C, device=lm.device) if budget else None
    weighted = torch.empty(B, lm.layers, lm.heads, C, device=lm.device) if budget else None
    if budget:
        weights = category_weights(padded)
        grams = grams if grams is not None else output_grams(lm)

    def on_layer(cap: LayerAttention) -> None:
        layer, attention = cap.layer, cap.weights
        out[:, layer] = batch_scores(attention, masks)
        if budget:
            raw[:, layer] = batch_budget(attention, weights)
            values = cap.value.transpose(1, 2).reshape(B, width, -1)  # [B, T, heads * head_dim]
            norms = value_norms(values, grams[layer])
            weighted[:, layer] = batch_budget(value_weighted(attention, norms), weights)

    forward_capture(lm, batch, on_layer)
    return BatchResult(out.cpu().numpy(), raw.cpu().numpy() if budget else None,
                       weighted.cpu().numpy() if budget else None)


def score_batch(lm: LoadedModel, batch: list[EncodedPair]) -> np.ndarray:
    """Scores of every head on each pair of one padded batch:
    ``[B, layers, heads, 7]`` float32 (NaN = undefined)."""
    return score_batch_all(lm, batch, budget=False).scores


@dataclass
class CorpusBudget:
    """The corpus's attention budgets, mergeable
    (:class:`generator.budget.BudgetSums`): ``sums`` of the raw attention,
    ``value_sums`` of the value-weighted attention."""

    sums: BudgetSums
    value_sums: BudgetSums | None

    @classmethod
    def zeros(cls, layers: int, heads: int) -> CorpusBudget:
        return cls(BudgetSums.zeros(layers, heads), BudgetSums.zeros(layers, heads))

    def add(self, result: BatchResult) -> None:
        """Add a batch's per-pair budgets."""
        self.sums.add(result.budget)
        self.value_sums.add(result.value_budget)


def score_corpus(lm: LoadedModel, encoded: list[EncodedPair], batch_size: int,
                 progress: bool = True) -> tuple[np.ndarray, ScoreSums, CorpusBudget]:
    """Stream all pairs through the model in length-sorted batches: scores,
    budgets and value-weighted budgets in one pass.

    Args:
        lm: the model.
        encoded: the corpus, from :func:`generator.model.encode_pairs`.
        batch_size: pairs per forward pass.
        progress: show a progress bar.

    Returns:
        ``(pair_scores, sums, budget)``: float32 ``[pairs, layers, heads, 7]``
        in corpus order (see :func:`score_batch`), the mergeable
        :class:`ScoreSums` of the corpus and its :class:`CorpusBudget`.
    """
    pair_scores = np.full((len(encoded), lm.layers, lm.heads, len(PATTERNS)), np.nan, dtype=np.float32)
    sums = ScoreSums.zeros(lm.layers, lm.heads)
    budget = CorpusBudget.zeros(lm.layers, lm.heads)
    grams = output_grams(lm)
    batches = length_sorted_batches(encoded, batch_size)
    with tqdm(total=len(encoded), desc="scoring heads", unit="pair", disable=not progress, leave=False) as bar:
        for batch in batches:
            result = score_batch_all(lm, batch, budget=True, grams=grams)
            pair_scores[[e.index for e in batch]] = result.scores
            sums.add(result.scores.astype(np.float64))
            budget.add(result)
            bar.update(len(batch))
    return pair_scores, sums, budget


@dataclass
class HeadSummary:
    """One head's corpus-level result.

    Attributes:
        layer: 0-indexed layer.
        head: 0-indexed head within the layer.
        scores: pattern -> corpus mean score in [0, 1] (``None`` when no pair
            defines it).
        label: the pattern it follows, or ``mixed``.
        example_pattern: the pattern its examples are chosen by (its label;
            for a ``mixed`` head, its nearest pattern).
        consistency: share of the pairs whose own score for the label's
            pattern reaches its threshold (for a ``mixed`` head: on which no
            pattern reaches its threshold); ``None`` when no pair defines it.
        examples: corpus indices of its example pairs, best first.
        budget / value_budget: category name (the eleven
            :data:`generator.budget.CATEGORY_NAMES`) -> mean share of the
            head's raw / value-weighted attention (each sums to 1); empty when
            no budget was computed.
        budget_lead: category name -> fraction of pairs on which that
            category has the largest raw share.
        description: one plain sentence from label, consistency and budget
            (:func:`generator.describe.describe_head`).
    """

    layer: int
    head: int
    scores: dict[str, float | None]
    label: str
    example_pattern: str
    consistency: float | None
    examples: list[int]
    budget: dict[str, float] = field(default_factory=dict)
    value_budget: dict[str, float] = field(default_factory=dict)
    budget_lead: dict[str, float] = field(default_factory=dict)
    description: str = ""


def summarise_heads(pair_scores: np.ndarray, sums: ScoreSums, thresholds: dict[str, float],
                    examples_per_head: int, budget: CorpusBudget | None = None) -> list[HeadSummary]:
    """Label each head from the corpus means, pick its example pairs and say
    in one sentence what it does.

    Args:
        pair_scores: ``[pairs, layers, heads, 7]`` per-pair scores.
        sums: the corpus :class:`ScoreSums`.
        thresholds: pattern name -> labelling threshold.
        examples_per_head: how many example pairs: those with the highest
            score for its label (for a ``mixed`` head, for its nearest pattern).
        budget: the corpus's :class:`CorpusBudget` (``None``: no budget fields).

    Returns:
        One :class:`HeadSummary` per head, layer-major.
    """
    means = sums.mean()
    shares = budget.sums.mean() if budget is not None else None
    leads = budget.sums.lead_share() if budget is not None else None
    value_shares = budget.value_sums.mean() if budget is not None and budget.value_sums is not None else None
    out = []
    layers, heads = means.shape[:2]
    for layer in range(layers):
        for head in range(heads):
            s = means[layer, head]
            label = classify(s, thresholds)
            pattern = label if label != MIXED else nearest_pattern(s, thresholds)
            per_pair = pair_scores[:, layer, head]
            scores = {p: (None if np.isnan(s[k]) else float(s[k])) for k, p in enumerate(PATTERNS)}
            agree = consistency(per_pair, label, thresholds)
            named = {}
            if budget is not None:
                named = {key: dict(zip(CATEGORY_NAMES, arr[layer, head].tolist()))
                         for key, arr in (("budget", shares), ("value_budget", value_shares),
                                          ("budget_lead", leads)) if arr is not None}
            out.append(HeadSummary(
                layer=layer, head=head, scores=scores, label=label, example_pattern=pattern,
                consistency=agree, examples=top_pairs(per_pair, pattern, examples_per_head),
                description=describe_head(label, agree, scores, named.get("budget"), named.get("budget_lead"),
                                          thresholds),
                **named,
            ))
    return out


@dataclass
class Showcase:
    """Attention of the pairs the pages show, and q/k for each head's best pair.

    Attributes:
        attention: corpus index -> float32 ``[layers, heads, n, n]`` (rows =
            query, columns = key).
        qk: corpus index -> ``(q, k)``, each float32 ``[layers, heads, n,
            head_dim]``, the projections before the scale (the "neuron view"
            of Vig 2019, "A Multiscale Visualization of Attention in the
            Transformer Model", section 3.3).
        scaling: float64 ``[layers]``, the factor on ``q . k`` in the logits
            (``1/sqrt(head_dim)``; DeBERTa-v2/v3: ``1/sqrt(3 head_dim)``);
            ``None`` when no q/k was captured.
        extra: corpus index -> term name -> float32 ``[layers, heads, n, n]``,
            every logit term the architecture adds to ``q . k * scaling``
            (:attr:`generator.architectures.Architecture.extra_terms`:
            DeBERTa's ``c2p`` / ``p2c``, MPNet's ``position_bias``; empty for
            BERT), so that ``softmax(q k^T * scaling + sum(extra))`` is the
            attention.
    """

    attention: dict[int, np.ndarray] = field(default_factory=dict)
    qk: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    scaling: np.ndarray | None = None
    extra: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)

    def to_cache(self) -> tuple[dict[str, np.ndarray], dict]:
        """``(arrays, meta)`` for :func:`generator.cache.store`: ``att_<i>``,
        ``q_<i>``, ``k_<i>`` and ``extra_<term>_<i>`` arrays per corpus index
        ``i``, and ``scaling``."""
        arrays = {f"att_{i}": a for i, a in self.attention.items()}
        for i, (q, k) in self.qk.items():
            arrays[f"q_{i}"], arrays[f"k_{i}"] = q, k
        for i, terms in self.extra.items():
            for name, a in terms.items():
                arrays[f"extra_{name}_{i}"] = a
        if self.scaling is not None:
            arrays["scaling"] = self.scaling
        return arrays, {"pairs": sorted(self.attention), "qk": sorted(self.qk)}

    @classmethod
    def from_cache(cls, arrays: dict[str, np.ndarray], meta: dict) -> Showcase:
        """The inverse of :meth:`to_cache` (same order of pairs)."""
        extra: dict[int, dict[str, np.ndarray]] = {}
        for name, a in arrays.items():
            if name.startswith("extra_"):
                term, index = name[len("extra_"):].rsplit("_", 1)
                extra.setdefault(int(index), {})[term] = a
        return cls(
            attention={int(name[4:]): a for name, a in arrays.items() if name.startswith("att_")},
            qk={int(name[2:]): (a, arrays[f"k_{name[2:]}"]) for name, a in arrays.items() if name.startswith("q_")},
            scaling=arrays.get("scaling"), extra=extra,
        )


def compute_showcase(lm: LoadedModel, encoded: list[EncodedPair], pair_indices: list[int], qk_indices: list[int],
                     batch_size: int, progress: bool = True) -> Showcase:
    """Second, small pass over only the pairs shown on pages.

    Args:
        lm: the model.
        encoded: the corpus, from :func:`generator.model.encode_pairs`.
        pair_indices: corpus indices whose attention the pages show.
        qk_indices: corpus indices whose queries and keys the head pages show.
        batch_size: pairs per forward pass.
        progress: show a progress bar.

    Returns:
        The :class:`Showcase` of those pairs.
    """
    show = Showcase()
    chosen = [encoded[i] for i in sorted(set(pair_indices))]
    with tqdm(total=len(chosen) + len(set(qk_indices)), desc="example attention", unit="pair",
              disable=not progress, leave=False) as bar:
        for batch in length_sorted_batches(chosen, batch_size):
            for e, att in zip(batch, attention_for(lm, batch)):
                show.attention[e.index] = att.astype(np.float32)
            bar.update(len(batch))
        # q/k of each head's best pair, in padded batches like the scoring
        # (one pair per forward pass left the matrix units mostly idle: about
        # 10 % of a 12 x 12 model's build)
        for batch in length_sorted_batches([encoded[i] for i in sorted(set(qk_indices))], batch_size):
            out = capture_query_key(lm, batch, terms=True)
            show.scaling = out["scaling"]
            for b, e in enumerate(batch):
                n = len(e.input_ids)
                show.qk[e.index] = (out["q"][b, :, :, :n].astype(np.float32), out["k"][b, :, :, :n].astype(np.float32))
                if out["extra"]:
                    show.extra[e.index] = {name: t[b, :, :, :n, :n].astype(np.float32)
                                           for name, t in out["extra"].items()}
            bar.update(len(batch))
    return show
