"""Pattern scores and head labels: pure functions, no I/O.

The seven scores follow the six patterns of Vig (2019, "Deconstructing BERT:
Distilling 6 Patterns from 100 Million Parameters") plus broad "bag of words"
attention, measured as in Clark et al. (2019, "What Does BERT Look At? An
Analysis of BERT's Attention", sections 3-4). Definitions, for
one head and one pair with attention ``A`` (``n x n``, rows = query "from",
columns = key "to", padding removed), ``S`` = special positions ([CLS],
[SEP]), ``Q`` = all other positions:

* ``next``           mean_{i in Q} A[i, i+1]
* ``previous``       mean_{i in Q} A[i, i-1]
* ``same_token``     mean_{i in Q} sum_{j in Q, tok(j) = tok(i)} A[i, j]   (j = i included)
* ``other_sentence`` mean over i in Q having a same-token j in the other sentence
                     of sum_{those j} A[i, j]                     (undefined if no such i)
* ``same_word``      mean over i in Q whose word has other WordPiece pieces
                     of sum_{other pieces j} A[i, j]              (undefined if no such i)
* ``delimiter``      mean_{i in Q} sum_{j in S} A[i, j]
* ``broad``          mean_{i in Q} H(A[i, :]) / ln(n), natural log, 0 ln 0 = 0

Every score is a fraction of attention (or of the maximum entropy) in [0, 1].
An undefined score is NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch

from generator.registry import LABELS, MIXED, PATTERNS  # noqa: F401  (re-exported)

P = len(PATTERNS)


@dataclass(frozen=True)
class PairLayout:
    """What the scores need to know about one tokenised pair (length ``n``).

    ``tokens``: the tokenizer's tokens (WordPiece strings, for display);
    ``segment``: 0 for sentence a, 1 for b, -1 for special tokens; ``word``:
    the BasicTokenizer word, inside its sentence, containing the first
    character of the token's span (:func:`generator.tokens.span_word`; -1 for
    special tokens and spans of only whitespace); ``special``: True where the
    tokenizer added the token (its special-tokens mask: [CLS], [SEP], <s>...).
    ``identity``: tok(j), the text of each token's span, case-folded when the
    tokenizer lower-cases (:func:`generator.tokens.span_identity`); ``None``
    falls back to the lower-cased ``tokens``. All arrays have shape ``[n]``.
    """

    tokens: tuple[str, ...]
    segment: np.ndarray
    word: np.ndarray
    special: np.ndarray
    identity: tuple[str, ...] | None = None

    @property
    def n(self) -> int:
        return len(self.tokens)

    def token_ids(self) -> np.ndarray:
        """``[n]`` int64: equal values for equal tok(j) (:attr:`identity`),
        numbered within this pair (computed once per layout)."""
        return self._token_ids

    @cached_property
    def _token_ids(self) -> np.ndarray:
        _, inverse = np.unique(list(self.identities()), return_inverse=True)
        return inverse.reshape(-1).astype(np.int64)

    @cached_property
    def punctuation(self) -> np.ndarray:
        """``[n]`` bool: tok(j) is one or more punctuation characters and j is
        not special (:func:`generator.tokens.is_punctuation`; the budget's
        ``punctuation`` keys)."""
        from generator.tokens import is_punctuation

        return np.array([bool(t) and not s and all(is_punctuation(ch) for ch in t)
                         for t, s in zip(self.identities(), np.asarray(self.special, dtype=bool))], dtype=bool)

    def identities(self) -> tuple[str, ...]:
        """tok(j) for every position: :attr:`identity`, or the lower-cased
        tokens when the layout has none."""
        return self.identity if self.identity is not None else tuple(t.lower() for t in self.tokens)

    def masks(self) -> dict[str, np.ndarray]:
        """Boolean masks of the pattern definitions (:meth:`BatchMasks.from_layouts`
        on this pair alone).

        ``query`` and ``special``: ``[n]``; ``same_token``, ``other_sentence``
        and ``same_word``: ``[n, n]`` (row = query i, column = key j).
        """
        m = BatchMasks.from_layouts([self], self.n)  # one rule: the batched one, on a batch of one
        return {name: getattr(m, name)[0].numpy() for name in ("query", "special", "same_token", "other_sentence",
                                                                "same_word")}


# ------------------------------------------------------------- batched version

@dataclass
class PaddedLayouts:
    """The per-token facts of a padded batch of ``B`` pairs, ``T`` tokens,
    as ``[B, T]`` tensors on one device: what every ``[B, T, T]`` mask of the
    batch (:class:`BatchMasks`, :class:`generator.budget.BudgetMaps`) is built
    from, by broadcasting on that device (no per-pair loop over cells).

    ``token``: tok(j) numbered within its pair (int64, -1 on padding);
    ``segment``: 0 = a, 1 = b, -1 special or padding (int64); ``word``:
    word(j) (int64, -1 for none); ``special``, ``punctuation``: bool (False on
    padding); ``length``: ``[B]`` real lengths ``n`` (int64).
    """

    token: torch.Tensor
    segment: torch.Tensor
    word: torch.Tensor
    special: torch.Tensor
    punctuation: torch.Tensor
    length: torch.Tensor

    @classmethod
    def from_layouts(cls, layouts: list[PairLayout], width: int,
                     device: torch.device | str = "cpu") -> PaddedLayouts:
        """Pad the ``[n]`` vectors of ``layouts`` to ``width`` and move them to
        ``device`` (five ``[B, T]`` copies: the only per-pair work).

        Args:
            layouts: the batch's layouts (each ``n <= width``).
            width: ``T``, the padded length.
            device: where the masks will be built (the model's device).

        Returns:
            The padded layouts.
        """
        B = len(layouts)
        token = np.full((B, width), -1, dtype=np.int64)
        segment = np.full((B, width), -1, dtype=np.int64)
        word = np.full((B, width), -1, dtype=np.int64)
        special = np.zeros((B, width), dtype=bool)
        punctuation = np.zeros((B, width), dtype=bool)
        length = np.empty(B, dtype=np.int64)
        for b, layout in enumerate(layouts):
            n = layout.n
            length[b] = n
            token[b, :n] = layout.token_ids()
            segment[b, :n] = layout.segment
            word[b, :n] = layout.word
            special[b, :n] = layout.special
            punctuation[b, :n] = layout.punctuation
        t = {k: torch.from_numpy(v).to(device, non_blocking=True)
             for k, v in dict(token=token, segment=segment, word=word, special=special,
                              punctuation=punctuation, length=length).items()}
        return cls(**t)

    @property
    def width(self) -> int:
        return self.token.shape[1]

    @property
    def valid(self) -> torch.Tensor:
        """``[B, T]`` bool: a real token, not padding."""
        return torch.arange(self.width, device=self.token.device)[None, :] < self.length[:, None]

    @property
    def query(self) -> torch.Tensor:
        """``[B, T]`` bool: Q, the real tokens that are not special."""
        return self.valid & ~self.special


@dataclass
class BatchMasks:
    """Masks of a padded batch of ``B`` pairs, length ``T`` (torch tensors).

    ``query``, ``special``: ``[B, T]`` bool (padding is in neither);
    ``same_token``, ``other_sentence``, ``same_word``: ``[B, T, T]`` bool;
    ``length``: ``[B]`` real lengths ``n``.
    """

    query: torch.Tensor
    special: torch.Tensor
    same_token: torch.Tensor
    other_sentence: torch.Tensor
    same_word: torch.Tensor
    length: torch.Tensor
    _nonzero: dict = field(default_factory=dict, repr=False, compare=False)

    def nonzero(self, name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(b, i, j)`` of the True cells of the ``[B, T, T]`` mask ``name``
        (computed once per batch, shared by every layer)."""
        if name not in self._nonzero:
            self._nonzero[name] = getattr(self, name).nonzero(as_tuple=True)
        return self._nonzero[name]

    @classmethod
    def from_layouts(cls, layouts: list[PairLayout] | PaddedLayouts, width: int | None = None,
                     device: torch.device | str = "cpu") -> BatchMasks:
        """The masks of :meth:`PairLayout.masks` for a whole padded batch,
        built by broadcasting on ``device``.

        Args:
            layouts: the batch's layouts, or their :class:`PaddedLayouts`
                (then ``width`` and ``device`` are theirs).
            width: ``T``, the padded length (at least every layout's ``n``).
            device: where the masks live (the model's device).

        Returns:
            The batch's masks; padding cells are False in every mask.
        """
        p = layouts if isinstance(layouts, PaddedLayouts) else PaddedLayouts.from_layouts(layouts, width, device)
        query = p.query
        both = query[:, :, None] & query[:, None, :]
        same_tok = both & (p.token[:, :, None] == p.token[:, None, :])
        same_seg = p.segment[:, :, None] == p.segment[:, None, :]
        eye = torch.eye(p.width, dtype=torch.bool, device=query.device)
        same_word = both & same_seg & (p.word[:, :, None] == p.word[:, None, :]) & (p.word >= 0)[:, :, None] & ~eye
        return cls(query=query, special=p.special & p.valid, same_token=same_tok, other_sentence=same_tok & ~same_seg,
                   same_word=same_word, length=p.length)


def _row_mean(values: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` ``[B, K, T]`` over the rows selected by ``rows``
    ``[B, T]``; ``[B, K]``, NaN where no row is selected."""
    w = rows.to(values.dtype)
    total = torch.einsum("bkt,bt->bk", values, w)
    count = w.sum(-1, keepdim=True).expand_as(total)
    return torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, math.nan))


def _masked_row_sums(A: torch.Tensor, masks: BatchMasks, name: str) -> torch.Tensor:
    """``sum_j A[b, k, i, j] * mask[b, i, j]``: ``[B, K, T]``. On CPU only the
    mask's True cells are read (a gather and an ordered scatter-add, a few
    percent of the cells); elsewhere a dense multiply-and-sum, which needs no
    atomic (order-dependent) adds."""
    if A.device.type != "cpu":
        return (A * getattr(masks, name).to(A.dtype).unsqueeze(1)).sum(-1)
    B, K, T, _ = A.shape
    b, i, j = masks.nonzero(name)
    out = torch.zeros(B, T, K, dtype=A.dtype)
    out.index_put_((b, i), A.permute(0, 2, 3, 1)[b, i, j], accumulate=True)
    return out.transpose(1, 2)


def batch_scores(attention: torch.Tensor, masks: BatchMasks) -> torch.Tensor:
    """Scores of every head in a padded batch, vectorised over heads and pairs.

    ``attention``: ``[B, K, T, T]`` for ``K`` heads (e.g. one layer's heads,
    or layers x heads flattened); padded keys must carry zero weight, as the
    model's masked softmax gives. Returns ``[B, K, 7]`` float32 in
    :data:`PATTERNS` order, NaN where undefined. The tests check it against a
    literal, loop-by-loop implementation of the definitions to float32 rounding.
    """
    A = attention.float()
    B, K, T, _ = A.shape
    q = masks.query
    f = lambda m: m.to(A.dtype)  # noqa: E731
    nxt = torch.zeros(B, K, T, dtype=A.dtype, device=A.device)
    prv = torch.zeros_like(nxt)
    nxt[..., :-1] = torch.diagonal(A, offset=1, dim1=-2, dim2=-1)
    prv[..., 1:] = torch.diagonal(A, offset=-1, dim1=-2, dim2=-1)
    # A matrix-vector product for the [B, T] key mask (einsum would make
    # permuted copies); the [B, T, T] masks are sparse (the diagonal plus
    # repeated tokens and word pieces), so on CPU gather their cells.
    delim = torch.matmul(A, f(masks.special)[:, None, :, None]).squeeze(-1)
    same_tok = _masked_row_sums(A, masks, "same_token")
    other = _masked_row_sums(A, masks, "other_sentence")
    word = _masked_row_sums(A, masks, "same_word")
    pos = torch.arange(T, device=A.device).unsqueeze(0)
    has_next = pos < (masks.length.unsqueeze(1) - 1)
    has_prev = pos >= 1
    log_n = torch.log(masks.length.to(A.dtype)).view(B, 1, 1)
    # a * ln(max(a, tiny)) is xlogy(a, a) (0 ln 0 = 0) for every a >= 0, up to
    # |a ln a| < 1e-36 for subnormal a, and vectorises where xlogy does not.
    entropy = (A * A.clamp_min(torch.finfo(A.dtype).tiny).log()).sum(-1) / -log_n
    by_name = {
        "next": _row_mean(nxt, q & has_next),
        "previous": _row_mean(prv, q & has_prev),
        "same_token": _row_mean(same_tok, q),
        "other_sentence": _row_mean(other, q & masks.other_sentence.any(-1)),
        "same_word": _row_mean(word, q & masks.same_word.any(-1)),
        "delimiter": _row_mean(delim, q),
        "broad": _row_mean(entropy, q),
    }
    return torch.stack([by_name[p] for p in PATTERNS], dim=-1)


# ------------------------------------------------------------ corpus statistics

@dataclass
class ScoreSums:
    """Mergeable corpus statistics: per head and pattern, the sum of the
    defined per-pair scores and how many pairs defined it. Shapes
    ``[layers, heads, 7]``. Shards scored anywhere merge exactly with ``+``."""

    total: np.ndarray
    count: np.ndarray

    @classmethod
    def zeros(cls, layers: int, heads: int) -> ScoreSums:
        return cls(np.zeros((layers, heads, P), np.float64), np.zeros((layers, heads, P), np.int64))

    def add(self, pair_scores: np.ndarray) -> None:
        """Add per-pair scores ``[B, layers, heads, 7]`` (NaN = undefined)."""
        defined = ~np.isnan(pair_scores)
        self.total += np.where(defined, pair_scores, 0.0).sum(0)
        self.count += defined.sum(0)

    def __add__(self, other: ScoreSums) -> ScoreSums:
        return ScoreSums(self.total + other.total, self.count + other.count)

    def mean(self) -> np.ndarray:
        """``[layers, heads, 7]`` mean over the pairs where defined; NaN where none."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.count > 0, self.total / np.maximum(self.count, 1), np.nan)


# ------------------------------------------------------------------ labelling

def classify(scores: np.ndarray, thresholds: dict[str, float]) -> str:
    """Label of one head (or one head on one pair) from its ``[7]`` scores.

    The label is the pattern ``p`` with the largest ``score_p / threshold_p``
    among those with ``score_p >= threshold_p`` (NaN never qualifies); ties go
    to the earlier pattern in :data:`PATTERNS`; ``"mixed"`` when none
    qualifies. A threshold of 0 makes its pattern qualify with any defined score.
    """
    best, best_ratio = MIXED, -1.0
    for k, name in enumerate(PATTERNS):
        s = scores[k]
        t = thresholds[name]
        if np.isnan(s) or s < t:
            continue
        ratio = s / t if t > 0 else math.inf
        if ratio > best_ratio:
            best, best_ratio = name, ratio
    return best


def nearest_pattern(scores: np.ndarray, thresholds: dict[str, float]) -> str:
    """The pattern with the largest ``score_p / threshold_p`` whether or not it
    reaches its threshold (used to pick examples for ``mixed`` heads)."""
    ratios = [(-1.0 if np.isnan(scores[k]) else scores[k] / max(thresholds[p], 1e-9)) for k, p in enumerate(PATTERNS)]
    return PATTERNS[int(np.argmax(ratios))]


def _qualifying(scores: np.ndarray, thresholds: dict[str, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(scores, thresholds, qualifies)`` for scores ``[..., 7]``: the
    thresholds in the scores' float type (as :func:`classify` compares a
    float32 score with a Python float) and where ``score >= threshold``."""
    s = np.asarray(scores)
    if not np.issubdtype(s.dtype, np.floating):
        s = s.astype(np.float64)
    t = np.array([thresholds[p] for p in PATTERNS], dtype=s.dtype)
    with np.errstate(invalid="ignore"):
        ok = ~np.isnan(s) & (s >= t)
    return s, t, ok


def classify_all(head_scores: np.ndarray, thresholds: dict[str, float]) -> np.ndarray:
    """Labels ``[...]`` (object array of str) for scores ``[..., 7]``:
    :func:`classify` of every row, vectorised (same ratios in the same float
    type, ties to the earlier pattern)."""
    s, t, ok = _qualifying(head_scores, thresholds)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(t > 0, s / np.where(t > 0, t, 1), np.inf)
    best = np.argmax(np.where(ok, ratio, -np.inf), axis=-1)  # argmax: first of equal maxima
    names = np.array([*PATTERNS, MIXED], dtype=object)
    return names[np.where(ok.any(-1), best, P)]


def consistency(pair_scores: np.ndarray, label: str, thresholds: dict[str, float]) -> float | None:
    """Share of pairs that agree with a head's ``label``.

    ``pair_scores``: ``[pairs, 7]`` for one head. For a pattern label: the
    share, among pairs where that score is defined, whose score reaches the
    threshold. For ``mixed``: the share of pairs where no pattern reaches its
    threshold. ``None`` when no pair defines the score.
    """
    if label == MIXED:
        if len(pair_scores) == 0:
            return None
        _, _, ok = _qualifying(pair_scores, thresholds)
        return float(np.mean(~ok.any(-1)))
    column = pair_scores[:, PATTERNS.index(label)]
    defined = column[~np.isnan(column)]
    if defined.size == 0:
        return None
    return float(np.mean(defined >= thresholds[label]))


def top_pairs(pair_scores: np.ndarray, pattern: str, k: int) -> list[int]:
    """Indices of the ``k`` pairs with the highest score for ``pattern``
    (``pair_scores``: ``[pairs, 7]`` for one head); undefined scores last,
    ties by corpus order."""
    column = pair_scores[:, PATTERNS.index(pattern)]
    key = np.where(np.isnan(column), -np.inf, column)
    order = np.lexsort((np.arange(len(key)), -key))
    return [int(i) for i in order[:k]]
