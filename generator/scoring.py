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

from generator.config import PATTERNS
from generator.model import EncodedPair, LoadedModel, attention_for, capture_query_key, forward_layers, length_sorted_batches
from generator.patterns import MIXED, BatchMasks, ScoreSums, batch_scores, classify, consistency, nearest_pattern, top_pairs

log = logging.getLogger(__name__)


def score_batch(lm: LoadedModel, batch: list[EncodedPair]) -> np.ndarray:
    """Score every head on each pair of one padded batch.

    Args:
        lm: the model.
        batch: the pairs (see :func:`generator.model.length_sorted_batches`).

    Returns:
        float32 ``[B, layers, heads, 7]``: each head's seven pattern scores
        (fractions of attention in [0, 1], order of
        :data:`generator.registry.PATTERNS`) on each pair; NaN where a pair
        does not define a pattern.
    """
    width = max(len(e.input_ids) for e in batch)
    masks = BatchMasks.from_layouts([e.layout for e in batch], width, lm.device)
    out = torch.empty(len(batch), lm.layers, lm.heads, len(PATTERNS))

    def on_layer(layer: int, attention: torch.Tensor) -> None:
        out[:, layer] = batch_scores(attention, masks).cpu()

    forward_layers(lm, batch, on_layer)
    return out.numpy()


def score_corpus(lm: LoadedModel, encoded: list[EncodedPair], batch_size: int,
                 progress: bool = True) -> tuple[np.ndarray, ScoreSums]:
    """Stream all pairs through the model in length-sorted batches.

    Args:
        lm: the model.
        encoded: the corpus, from :func:`generator.model.encode_pairs`.
        batch_size: pairs per forward pass.
        progress: show a progress bar.

    Returns:
        ``(pair_scores, sums)``: float32 ``[pairs, layers, heads, 7]`` in
        corpus order (see :func:`score_batch`) and the mergeable
        :class:`ScoreSums` of the corpus.
    """
    pair_scores = np.full((len(encoded), lm.layers, lm.heads, len(PATTERNS)), np.nan, dtype=np.float32)
    sums = ScoreSums.zeros(lm.layers, lm.heads)
    batches = length_sorted_batches(encoded, batch_size)
    with tqdm(total=len(encoded), desc="scoring heads", unit="pair", disable=not progress, leave=False) as bar:
        for batch in batches:
            scores = score_batch(lm, batch)
            pair_scores[[e.index for e in batch]] = scores
            sums.add(scores.astype(np.float64))
            bar.update(len(batch))
    return pair_scores, sums


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
    """

    layer: int
    head: int
    scores: dict[str, float | None]
    label: str
    example_pattern: str
    consistency: float | None
    examples: list[int]


def summarise_heads(pair_scores: np.ndarray, sums: ScoreSums, thresholds: dict[str, float],
                    examples_per_head: int) -> list[HeadSummary]:
    """Label each head from the corpus means and pick its example pairs.

    Args:
        pair_scores: float32 ``[pairs, layers, heads, 7]``.
        sums: the corpus sums of those scores.
        thresholds: pattern -> threshold in [0, 1].
        examples_per_head: how many example pairs per head: those with the
            highest score for its label (for a ``mixed`` head, for its
            nearest pattern).

    Returns:
        One :class:`HeadSummary` per head, layer-major (``layer * heads +
        head``).
    """
    means = sums.mean()
    out = []
    layers, heads = means.shape[:2]
    for layer in range(layers):
        for head in range(heads):
            s = means[layer, head]
            label = classify(s, thresholds)
            pattern = label if label != MIXED else nearest_pattern(s, thresholds)
            per_pair = pair_scores[:, layer, head]
            out.append(HeadSummary(
                layer=layer, head=head,
                scores={p: (None if np.isnan(s[k]) else float(s[k])) for k, p in enumerate(PATTERNS)},
                label=label, example_pattern=pattern,
                consistency=consistency(per_pair, label, thresholds),
                examples=top_pairs(per_pair, pattern, examples_per_head),
            ))
    return out


@dataclass
class Showcase:
    """Attention of the pairs the pages show, and q/k for each head's best pair.

    Attributes:
        attention: corpus index -> float32 ``[layers, heads, n, n]`` (rows =
            query, columns = key).
        qk: corpus index -> ``(q, k)``, each float32 ``[layers, heads, n,
            head_dim]``, the projections before the ``1/sqrt(head_dim)``
            scale (the "neuron view" of Vig 2019, "A Multiscale Visualization
            of Attention in the Transformer Model", section 3.3).
    """

    attention: dict[int, np.ndarray] = field(default_factory=dict)
    qk: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def to_cache(self) -> tuple[dict[str, np.ndarray], dict]:
        """``(arrays, meta)`` for :func:`generator.cache.store`: ``att_<i>``,
        ``q_<i>`` and ``k_<i>`` arrays per corpus index ``i``."""
        arrays = {f"att_{i}": a for i, a in self.attention.items()}
        for i, (q, k) in self.qk.items():
            arrays[f"q_{i}"], arrays[f"k_{i}"] = q, k
        return arrays, {"pairs": sorted(self.attention), "qk": sorted(self.qk)}

    @classmethod
    def from_cache(cls, arrays: dict[str, np.ndarray], meta: dict) -> Showcase:
        """The inverse of :meth:`to_cache` (same order of pairs)."""
        return cls(
            attention={int(name[4:]): a for name, a in arrays.items() if name.startswith("att_")},
            qk={int(name[2:]): (a, arrays[f"k_{name[2:]}"]) for name, a in arrays.items() if name.startswith("q_")},
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
            out = capture_query_key(lm, batch)
            for b, e in enumerate(batch):
                n = len(e.input_ids)
                show.qk[e.index] = (out["q"][b, :, :, :n].astype(np.float32), out["k"][b, :, :, :n].astype(np.float32))
            bar.update(len(batch))
    return show
