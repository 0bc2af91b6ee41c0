"""How a head gets its attention: the query/key arithmetic of one head on one
pair, and which neuron dimensions of q and k carry its pattern (the "neuron
view" of Vig 2019, "A Multiscale Visualization of Attention in the Transformer
Model", section 3.3, and "Deconstructing BERT, Part 2: Visualizing the Inner
Workings of Attention"). Pure functions, no I/O.
"""

from __future__ import annotations

import numpy as np

from generator.config import PATTERNS
from generator.patterns import PairLayout


def pattern_pairs(layout: PairLayout, pattern: str) -> np.ndarray:
    """``[n, n]`` bool: the (query i, key j) cells a pattern's score sums over
    (see :mod:`generator.patterns`); for ``broad``, every cell of a query row."""
    m = layout.masks()
    n = layout.n
    q = m["query"]
    cells = np.zeros((n, n), dtype=bool)
    if pattern == "next":
        idx = np.flatnonzero(q[:-1])
        cells[idx, idx + 1] = True
    elif pattern == "previous":
        idx = np.flatnonzero(q[1:]) + 1
        cells[idx, idx - 1] = True
    elif pattern == "delimiter":
        cells = q[:, None] & m["special"][None, :]
    elif pattern in ("same_token", "other_sentence", "same_word"):
        cells = m[pattern].copy()
    elif pattern == "broad":
        cells = np.repeat(q[:, None], n, axis=1)
    else:
        raise ValueError(f"unknown pattern {pattern!r}; expected one of {PATTERNS}")
    return cells


def pattern_neurons(q: np.ndarray, k: np.ndarray, layout: PairLayout, pattern: str, top: int = 5) -> dict:
    """Which dimensions of q and k make a head attend along ``pattern``.

    ``q``, ``k``: ``[n, d]`` for one head on one pair. For the cells (i, j)
    of the pattern, ``contribution[d] = mean_{(i,j)} q_i[d] * k_j[d]`` (so
    ``contribution.sum()`` is the mean q.k towards the pattern's keys, before
    scaling); the same mean over the query rows' other keys is the contrast.
    Returns ``{"dims": [top dims, largest contribution first], "values":
    their contributions, "pattern_dot": mean q.k on the pattern cells,
    "other_dot": on the other cells, "top_share": share of the summed
    positive contributions carried by the top dims, "dims_for_80": how many
    dims (largest first) it takes to reach 80% of the positive sum}``;
    ``None`` entries when the pair has no cell of the pattern.
    """
    cells = pattern_pairs(layout, pattern)
    rows = ~layout.special
    other = rows[:, None] & ~cells
    prod = q[:, None, :].astype(np.float64) * k[None, :, :].astype(np.float64)  # [n, n, d]
    if not cells.any():
        return {"dims": [], "values": [], "pattern_dot": None, "other_dot": None, "top_share": None,
                "dims_for_80": None}
    contribution = prod[cells].mean(axis=0)
    order = np.argsort(-contribution, kind="stable")
    positive = np.clip(contribution, 0, None)
    total = positive.sum()
    cumulative = np.cumsum(positive[order]) / total if total > 0 else np.zeros_like(positive)
    dims = order[:top]
    return {
        "dims": [int(x) for x in dims],
        "values": [float(contribution[x]) for x in dims],
        "pattern_dot": float(contribution.sum()),
        "other_dot": float(prod[other].sum(-1).mean()) if other.any() else None,
        "top_share": float(positive[dims].sum() / total) if total > 0 else None,
        "dims_for_80": int(np.searchsorted(cumulative, 0.8) + 1) if total > 0 else None,
    }
