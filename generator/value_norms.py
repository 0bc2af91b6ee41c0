"""Value-weighted attention: attention weights times the norm of what they move.

Kobayashi, Kuribayashi, Yokoi and Inui (2020, "Attention is Not Only a
Weight: Analyzing Transformers with Vector Norms", EMNLP, section 3) write a
head's contribution to the attention output at position i as
sum_j alpha_ij f_h(x_j), with f_h(x) = (x W_V,h + b_V,h) W_O,h, where W_O,h
is the slice of the attention output projection that multiplies head h's
part of the concatenated context. A large weight alpha_ij on a vector f_h(x_j)
of small norm moves little: ``||alpha_ij f_h(x_j)||`` is the better measure
of how much j contributes. Their section 5 finds that the large weights BERT
puts on [CLS], [SEP] and punctuation mostly go to such small vectors.
"""

from __future__ import annotations

import numpy as np
import torch

from generator.budget import CATEGORY_NAMES

#: A head is an "attention sink" when at least this share of its raw
#: attention (mean over queries and pairs) goes to [CLS] and [SEP]: the
#: majority, so that parking attention there is what the head mostly does ...
SINK_RAW_MIN = 0.5
#: ... and value weighting keeps at most this fraction of that share (two
#: thirds or more of it lands on vectors that carry next to nothing).
SINK_KEEP_MAX = 1 / 3

#: The rule in one sentence, for the pages (from the two thresholds above).
SINK_RULE = (f"The rule: at least {100 * SINK_RAW_MIN:.0f}% of the attention on [CLS] and [SEP], and at most "
             f"{100 * SINK_KEEP_MAX:.0f}% of that share left once value-weighted; value weighting shrinks the [CLS]/[SEP] share of nearly every "
             f"BERT head, so the label is kept for the heads where that share is most of their attention and almost "
             f"all of it vanishes.")


def output_gram(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """Per-head Gram matrices of the attention output projection.

    Args:
        weight: the projection's weight ``[hidden, H * d]`` (torch ``Linear``
            layout: ``output = context @ weight.T + bias``), e.g. BERT's
            ``attention.output.dense.weight``.
        heads: ``H``.

    Returns:
        ``[H, d, d]`` float32: ``W_O,h^T W_O,h`` with ``W_O,h = weight[:, h*d:(h+1)*d]``,
        so that ``||v W_O,h^T||^2 = v G_h v^T``.
    """
    hidden, width = weight.shape
    d = width // heads
    w = weight.detach().float().reshape(hidden, heads, d).permute(1, 0, 2)  # [H, hidden, d]
    return torch.matmul(w.transpose(1, 2), w)


def value_norms(values: torch.Tensor, gram: torch.Tensor) -> torch.Tensor:
    """``||f_h(x_j)||`` for every head and position (Kobayashi et al. 2020, section 3).

    Args:
        values: the value projection's output ``[B, T, H * d]``
            (``x W_V + b_V``, bias included), read with a forward hook.
        gram: :func:`output_gram` of the layer, ``[H, d, d]``.

    Returns:
        ``[B, H, T]`` float32 norms, computed as ``sqrt(v_h G_h v_h^T)``: a
        ``d x d`` product per head instead of ``d x hidden``.
    """
    H, d, _ = gram.shape
    B, T, _ = values.shape
    v = values.float().reshape(B, T, H, d).transpose(1, 2)  # [B, H, T, d]
    squared = (torch.matmul(v, gram.unsqueeze(0)) * v).sum(-1)
    return squared.clamp_min(0).sqrt()


def value_weighted(attention: torch.Tensor, norms: torch.Tensor) -> torch.Tensor:
    """Value-weighted attention, rows renormalised.

    Args:
        attention: ``[B, H, T, T]`` attention weights alpha (rows = query).
        norms: ``[B, H, T]`` ``||f_h(x_j)||`` of each key j (:func:`value_norms`).

    Returns:
        ``[B, H, T, T]``: ``alpha_ij ||f_h(x_j)|| / sum_k alpha_ik ||f_h(x_k)||``;
        each row sums to 1 (padded keys keep weight 0).
    """
    w = attention.float() * norms.float().unsqueeze(-2)
    return w / w.sum(-1, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)


def head_contributions(values: torch.Tensor, attention: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Each head's vectors ``sum_j alpha_ij f_h(x_j)`` in the model's hidden space.

    Args:
        values: ``[B, T, H * d]`` value projection output.
        attention: ``[B, H, T, T]``.
        weight: the output projection's weight ``[hidden, H * d]``.

    Returns:
        ``[B, H, T, hidden]``; their sum over heads plus the projection's bias is
        the projection's output (before dropout and LayerNorm).
    """
    B, H, T, _ = attention.shape
    hidden, width = weight.shape
    d = width // H
    v = values.float().reshape(B, T, H, d).transpose(1, 2)  # [B, H, T, d]
    f = torch.matmul(v, weight.detach().float().reshape(hidden, H, d).permute(1, 2, 0))  # [B, H, T, hidden]
    return torch.matmul(attention.float(), f)


def attention_sinks(budget: np.ndarray, value_budget: np.ndarray,
                    names: tuple[str, ...] = CATEGORY_NAMES) -> list[tuple[int, int]]:
    """The heads whose attention to [CLS]/[SEP] mostly vanishes once value-weighted.

    A head is a sink when its raw ``cls + sep`` share is at least
    :data:`SINK_RAW_MIN` (0.5: the majority of its attention, so parking on
    the delimiters is the head's main behaviour, not a side effect) and its
    value-weighted ``cls + sep`` share is at most :data:`SINK_KEEP_MAX` (a
    third) of the raw one: most of the weight lands on vectors that carry
    little (Kobayashi et al. 2020, section 5; Clark et al. 2019, "What Does
    BERT Look At?", section 3.2, the "no-op" reading of attention to [SEP]).

    Why these thresholds: value weighting shrinks the [CLS]/[SEP] share of
    almost every head, so a rule on the shrinkage alone names nearly all of
    them (the earlier rule, raw >= 0.3 and kept <= 0.5, flagged 59 of the 72
    heads of all-MiniLM-L6-v2 on the shipped corpus). On that build the kept
    fraction of the 24 heads with raw >= 0.5 falls in two groups, 0.16-0.32
    (21 heads) and 0.44-0.53 (3 heads); a third sits in the gap, so the rule
    names 21 heads, those whose main behaviour is attention that moves
    almost nothing. (Raw >= 0.5 with kept <= 0.25 would drop layer 4, head 5,
    the head with the largest raw share, which keeps 0.252: the edge of a
    group, not a gap.)

    Args:
        budget: ``[layers, heads, C]`` raw budget shares.
        value_budget: ``[layers, heads, C]`` value-weighted shares.
        names: the category names of the last axis (must include ``cls`` and
            ``sep``); :data:`generator.budget.CATEGORY_NAMES` by default.

    Returns:
        ``(layer, head)`` of every sink head, layer-major.
    """
    idx = [names.index("cls"), names.index("sep")]
    raw = np.asarray(budget)[..., idx].sum(-1)
    weighted = np.asarray(value_budget)[..., idx].sum(-1)
    sink = (raw >= SINK_RAW_MIN) & (weighted <= SINK_KEEP_MAX * raw)
    return [(int(l), int(h)) for l, h in zip(*np.nonzero(sink))]
