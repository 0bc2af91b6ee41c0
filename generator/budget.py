"""The attention budget: where a head's attention goes, as an exact partition.

For one head, one pair and a query position ``i`` in Q (the positions the
tokenizer did not add), every key ``j`` belongs to exactly one of the eleven
:data:`CATEGORIES`, the first that matches in their order (``self``, ``cls``,
``sep``, ``word_pieces``, ``previous``, ``next``, ``copies``,
``copies_other_sentence``, ``punctuation``, ``own_sentence``,
``other_sentence``). A head's budget share of category ``c`` on a pair is

    share_c = mean_{i in Q} sum_{j in c(i)} A[i, j]

and its corpus budget is the mean of the per-pair shares. Since the
categories partition every row and each row of ``A`` sums to 1, the eleven
shares sum to 1 for every head and pair. The categories refine the pattern
scores of Clark et al. (2019, "What Does BERT Look At? An Analysis of BERT's
Attention", sections 3-4) into a partition, so that a head that parks half of
its attention on [CLS] and spreads the rest over its own sentence is
described by both facts rather than by its nearest pattern alone.

Tokens and words are those of :mod:`generator.tokens` (tok(j) and word(j)
read from the text).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from generator.tokens import is_punctuation


@dataclass(frozen=True)
class BudgetCategory:
    """One category of the attention budget.

    ``name``: the machine key (``heads.json``); ``title``: a short label for
    legends; ``description``: the rule, in words; ``colour``: a hex colour,
    distinct from the others for colour-blind readers.
    """

    name: str
    title: str
    description: str
    colour: str


#: The eleven categories, in first-match order. Colours: the Okabe & Ito
#: (2008, "Color Universal Design") palette, completed with Paul Tol's
#: colour-blind-safe "muted" scheme.
CATEGORIES: tuple[BudgetCategory, ...] = (
    BudgetCategory("self", "itself", "the query token itself (j = i)", "#E69F00"),
    BudgetCategory("cls", "[CLS]", "the first special token ([CLS], <s>)", "#56B4E9"),
    BudgetCategory("sep", "[SEP]", "any other special token ([SEP], </s>)", "#009E73"),
    BudgetCategory("word_pieces", "own word", "other pieces of the query's own word", "#F0E442"),
    BudgetCategory("previous", "previous", "the token just before (j = i - 1)", "#0072B2"),
    BudgetCategory("next", "next", "the token just after (j = i + 1)", "#D55E00"),
    BudgetCategory("copies", "same token", "another occurrence of the same token in the same sentence",
                   "#CC79A7"),
    BudgetCategory("copies_other_sentence", "same token, other sentence",
                   "an occurrence of the same token in the other sentence", "#882255"),
    BudgetCategory("punctuation", "punctuation", "a token made only of punctuation", "#999933"),
    BudgetCategory("own_sentence", "own sentence", "any other token of the query's sentence", "#BBBBBB"),
    BudgetCategory("other_sentence", "other sentence", "any other token of the other sentence", "#332288"),
)

#: Category names in :data:`CATEGORIES` order.
CATEGORY_NAMES: tuple[str, ...] = tuple(c.name for c in CATEGORIES)

#: Number of categories (11).
C = len(CATEGORIES)


def category_map(layout) -> np.ndarray:
    """The category of every (query, key) cell of one pair.

    Args:
        layout: the pair's :class:`generator.patterns.PairLayout` (``n`` tokens).

    Returns:
        ``[n, n]`` int8: row = query i, column = key j, the index in
        :data:`CATEGORIES` of the first category that matches; -1 on the rows
        of special positions (they are not queries of the budget).
    """
    from generator.patterns import PaddedLayouts

    index = category_index(PaddedLayouts.from_layouts([layout], layout.n, "cpu"))[0].numpy().astype(np.int8)
    index[np.asarray(layout.special, dtype=bool)] = -1
    return index


def category_index(p) -> torch.Tensor:
    """The first-match rule of :data:`CATEGORIES` for a padded batch.

    Args:
        p: the batch's :class:`generator.patterns.PaddedLayouts` (``B`` pairs,
            ``T`` positions, on any device).

    Returns:
        ``[B, T, T]`` int64 on ``p``'s device: for query i and key j of pair
        b, the index in :data:`CATEGORIES` of the first category that holds
        (on every row, special and padding included; callers keep the rows
        and keys they need).
    """
    B, T = p.token.shape
    pos = torch.arange(T, device=p.token.device)
    i, j = pos.view(1, T, 1), pos.view(1, 1, T)
    key_q = ~p.special[:, None, :]
    seg_eq = p.segment[:, :, None] == p.segment[:, None, :]
    same_seg = seg_eq & key_q
    other_seg = ~seg_eq & key_q
    same_tok = (p.token[:, :, None] == p.token[:, None, :]) & key_q
    special_key = p.special[:, None, :]
    conditions = [  # in CATEGORIES order, the first that holds wins
        i == j,
        special_key & (j == 0),
        special_key & (j != 0),
        same_seg & (p.word[:, :, None] == p.word[:, None, :]) & (p.word >= 0)[:, :, None],
        j == i - 1,
        j == i + 1,
        same_tok & same_seg,
        same_tok & other_seg,
        p.punctuation[:, None, :],
        same_seg,
    ]
    index = torch.full((B, T, T), C - 1, dtype=torch.long, device=p.token.device)
    for k in range(len(conditions) - 1, -1, -1):
        index = torch.where(conditions[k], k, index)
    return index


def budget_reference(attention: np.ndarray, layout) -> np.ndarray:
    """One head's budget on one pair, literally from the definitions.

    Slow (Python loops over every cell); the yardstick for
    :func:`batch_budget`.

    Args:
        attention: ``[n, n]`` (rows = query, sum to 1).
        layout: the pair's :class:`generator.patterns.PairLayout`.

    Returns:
        ``[11]`` float64 in :data:`CATEGORIES` order: mean over queries i in Q
        of the attention row's sum over each category's keys.
    """
    A = np.asarray(attention, dtype=np.float64)
    n = layout.n
    tok = list(layout.identities())
    special, seg, word = layout.special, layout.segment, layout.word
    Q = [i for i in range(n) if not special[i]]
    total = np.zeros(C)
    for i in Q:
        for j in range(n):
            if j == i:
                c = "self"
            elif special[j] and j == 0:
                c = "cls"
            elif special[j]:
                c = "sep"
            elif seg[j] == seg[i] and word[i] >= 0 and word[j] == word[i]:
                c = "word_pieces"
            elif j == i - 1:
                c = "previous"
            elif j == i + 1:
                c = "next"
            elif tok[j] == tok[i] and seg[j] == seg[i]:
                c = "copies"
            elif tok[j] == tok[i]:
                c = "copies_other_sentence"
            elif tok[j] and all(is_punctuation(ch) for ch in tok[j]):
                c = "punctuation"
            elif seg[j] == seg[i]:
                c = "own_sentence"
            else:
                c = "other_sentence"
            total[CATEGORY_NAMES.index(c)] += A[i, j]
    return total / len(Q)


@dataclass
class BudgetMaps:
    """The category weights of a padded batch, built once and shared by every
    layer.

    ``weights``: ``[B, T*T, 11]`` float32, cell ``(i, j)`` of pair ``b`` at
    row ``i * T + j``: ``1 / |Q_b|`` in the column of its category when ``i``
    is a query of the budget, else 0 (padding and special rows).
    """

    weights: torch.Tensor

    @classmethod
    def from_layouts(cls, layouts, width: int | None = None, device: torch.device | str = "cpu") -> BudgetMaps:
        """The category weights of every pair of a padded batch, from
        :func:`category_index` (the rule :func:`category_map` shows for one pair),
        built by broadcasting on ``device``.

        Args:
            layouts: the batch's :class:`generator.patterns.PairLayout` s, or
                their :class:`generator.patterns.PaddedLayouts` (then
                ``width`` and ``device`` are theirs).
            width: ``T``, the padded length (at least every layout's ``n``).
            device: where the weights live (the model's device).

        Returns:
            The batch's maps; ``weights`` take ``B * T * T * 11 * 4`` bytes
            (5.8 MB for 32 pairs of 64 tokens).
        """
        from generator.patterns import PaddedLayouts

        p = layouts if isinstance(layouts, PaddedLayouts) else PaddedLayouts.from_layouts(layouts, width, device)
        B, T = p.token.shape
        dev = p.token.device
        index = category_index(p)
        cell = p.query[:, :, None] & p.valid[:, None, :]  # query rows of the budget, real keys
        index = torch.where(cell, index, C).view(B, T * T)  # column C is dropped below
        scale = 1.0 / p.query.sum(-1).clamp(min=1).to(torch.float32)
        w = torch.zeros(B, T * T, C + 1, device=dev)
        w.scatter_(2, index.unsqueeze(-1), 1.0)
        return cls(weights=(w[..., :C] * scale.view(B, 1, 1)).contiguous())


def category_weights(layouts, width: int | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
    """:attr:`BudgetMaps.weights` of ``layouts`` padded to ``width``:
    ``[B, T*T, 11]`` float32 (built once per batch, shared by every layer)."""
    return BudgetMaps.from_layouts(layouts, width, device).weights


def batch_budget(attention: torch.Tensor, maps: BudgetMaps | torch.Tensor) -> torch.Tensor:
    """Budget shares of every head on each pair of a padded batch.

    Args:
        attention: ``[B, K, T, T]`` for ``K`` heads; padded keys carry zero
            weight (the model's masked softmax).
        maps: the batch's :class:`BudgetMaps` or its ``weights``
            (:func:`category_weights`).

    Returns:
        ``[B, K, 11]`` float32 in :data:`CATEGORIES` order; every row sums to
        1 (to float32 rounding). Matches :func:`budget_reference`.
    """
    weights = maps.weights if isinstance(maps, BudgetMaps) else maps
    B, K, T, _ = attention.shape
    return torch.bmm(attention.float().reshape(B, K, T * T), weights)


@dataclass
class BudgetSums:
    """Mergeable corpus budget of every head: ``total`` ``[layers, heads, 11]``
    the sum over pairs of the per-pair shares; ``lead`` ``[layers, heads, 11]``
    how many pairs each category leads (the largest share, first on ties);
    ``pairs`` the number of pairs added. Shards merge exactly with ``+``."""

    total: np.ndarray
    lead: np.ndarray
    pairs: int = 0

    @classmethod
    def zeros(cls, layers: int, heads: int) -> BudgetSums:
        return cls(np.zeros((layers, heads, C), np.float64), np.zeros((layers, heads, C), np.int64), 0)

    def add(self, shares: np.ndarray) -> None:
        """Add per-pair shares ``[B, layers, heads, 11]``."""
        shares = np.asarray(shares, dtype=np.float64)
        self.total += shares.sum(0)
        lead = shares.argmax(-1)
        self.lead += (lead[..., None] == np.arange(C)).sum(0)
        self.pairs += shares.shape[0]

    def __add__(self, other: BudgetSums) -> BudgetSums:
        return BudgetSums(self.total + other.total, self.lead + other.lead, self.pairs + other.pairs)

    def mean(self) -> np.ndarray:
        """``[layers, heads, 11]`` mean share over the pairs (sums to 1 per head)."""
        return self.total / max(self.pairs, 1)

    def lead_share(self) -> np.ndarray:
        """``[layers, heads, 11]`` fraction of pairs on which each category leads."""
        return self.lead / max(self.pairs, 1)
