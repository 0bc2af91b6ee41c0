"""How a head gets its attention: the query/key arithmetic of one head on one
pair, and which neuron dimensions of q and k carry its pattern (the "neuron
view" of Vig 2019, "A Multiscale Visualization of Attention in the Transformer
Model", section 3.3, and "Deconstructing BERT, Part 2: Visualizing the Inner
Workings of Attention"), ranked by what moves the softmax. Pure functions, no I/O.
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


#: how pattern_neurons ranks dimensions, for the pages
NEURONS_METHOD = ("Dimensions are ranked by their contrast: q_i[t] k_j[t] minus its mean over all keys of query "
                  "row i, averaged over the pattern's cells. Softmax ignores whatever a query row adds equally to "
                  "every key (for example what the key bias adds), so only what a dimension adds to the pattern's "
                  "keys beyond the row's other keys moves the attention; a dimension with a large but "
                  "key-independent product is not ranked high.")


def pattern_neurons(q: np.ndarray, k: np.ndarray, layout: PairLayout, pattern: str, top: int = 5) -> dict:
    """Which dimensions of q and k make a head attend along ``pattern``
    (the neuron view of Vig 2019, "A Multiscale Visualization of Attention in
    the Transformer Model", ranked by contrast).

    Softmax is invariant to adding the same amount to every logit of a query
    row, so a dimension's share of the logit ``q_i . k_j`` only moves the
    attention by how it differs between the row's keys. Each dimension ``t``
    therefore gets the row-centred contribution

        ``c_ij[t] = q_i[t] k_j[t] - mean_{j'} q_i[t] k_j'[t] = q_i[t] (k_j[t] - kbar_i[t])``

    (``j'`` over all ``n`` keys of row ``i``), averaged over the pattern's
    cells ``(i, j)``: ``contribution[t] = mean_{(i,j)} c_ij[t]``. Adding any
    vector ``b`` to every key (a key bias: every ``q_i . k_j`` gains ``q_i .
    b``) leaves it unchanged. ``contribution.sum()`` is how far above the row
    mean the logits of the pattern's keys sit, before the ``1/sqrt(d)`` scale.

    Args:
        q: ``[n, d]`` queries of one head on one pair.
        k: ``[n, d]`` keys.
        layout: the pair's :class:`PairLayout`.
        pattern: one of :data:`generator.config.PATTERNS`.
        top: how many dimensions to return.

    Returns:
        ``{"dims": [top dims, largest contrast first], "values": their
        row-centred contributions, "raw_values": their uncentred means of
        ``q_i[t] k_j[t]`` over the cells, "pattern_dot": mean ``q.k`` on the
        pattern cells (uncentred), "other_dot": on the query rows' other cells,
        "pattern_contrast": ``contribution.sum()``, "top_share": share of the
        summed positive contrast carried by the top dims, "dims_for_80": how
        many dims (largest first) reach 80% of it, "method": one paragraph on
        the ranking}``; empty / ``None`` entries when the pair has no cell of
        the pattern.

    Raises:
        ValueError: for an unknown pattern.
    """
    cells = pattern_pairs(layout, pattern)
    rows = ~layout.special
    other = rows[:, None] & ~cells
    if not cells.any():
        return {"dims": [], "values": [], "raw_values": [], "pattern_dot": None, "other_dot": None,
                "pattern_contrast": None, "top_share": None, "dims_for_80": None, "method": NEURONS_METHOD}
    q64 = q.astype(np.float64)
    k64 = k.astype(np.float64)
    prod = q64[:, None, :] * k64[None, :, :]  # [n, n, d]
    centred = prod - prod.mean(axis=1, keepdims=True)  # minus each row's mean over its keys
    contribution = centred[cells].mean(axis=0)
    raw = prod[cells].mean(axis=0)
    order = np.argsort(-contribution, kind="stable")
    positive = np.clip(contribution, 0, None)
    total = positive.sum()
    cumulative = np.cumsum(positive[order]) / total if total > 0 else np.zeros_like(positive)
    dims = order[:top]
    return {
        "dims": [int(x) for x in dims],
        "values": [float(contribution[x]) for x in dims],
        "raw_values": [float(raw[x]) for x in dims],
        "pattern_dot": float(raw.sum()),
        "other_dot": float(prod[other].sum(-1).mean()) if other.any() else None,
        "pattern_contrast": float(contribution.sum()),
        "top_share": float(positive[dims].sum() / total) if total > 0 else None,
        "dims_for_80": int(np.searchsorted(cumulative, 0.8) + 1) if total > 0 else None,
        "method": NEURONS_METHOD,
    }


def logit_term_sizes(q: np.ndarray, k: np.ndarray, scaling: float, extra: dict[str, np.ndarray],
                     rows: np.ndarray | None = None) -> dict[str, float]:
    """How much each term of one head's attention logits moves its softmax.

    The logit of query ``i`` and key ``j`` is ``q_i . k_j * scaling`` (the
    "content" term, Vaswani et al. 2017, "Attention Is All You Need", eq. 1)
    plus the terms an architecture adds: DeBERTa's content-to-position and
    position-to-content terms (He et al. 2021, "DeBERTa: Decoding-enhanced
    BERT with Disentangled Attention", eq. 4), MPNet's relative-position bias
    (Song et al. 2020, "MPNet: Masked and Permuted Pre-training for Language
    Understanding", section 2.3). Softmax ignores what a row adds to every
    key alike, so each term's size is its row-centred root mean square.

    Args:
        q: ``[n, d]`` queries of one head on one pair.
        k: ``[n, d]`` keys.
        scaling: the factor on ``q . k`` (``1/sqrt(d)``; DeBERTa: ``1/sqrt(3 d)``).
        extra: term name -> ``[n, n]`` logits the architecture adds.
        rows: ``[n]`` bool, the query rows to measure (default: all).

    Returns:
        ``{"content": size, <term>: size, ...}``: for each term ``t``,
        ``sqrt(mean_i mean_j (t_ij - mean_j' t_ij')^2)`` over the chosen rows
        and the keys no term masks (a mask term such as ModernBERT's local
        window adds the dtype's lowest value, below ``-1e30``, to the keys it
        removes; it has size 0 on the keys it keeps), in logit units.
    """
    terms = {"content": (q.astype(np.float64) @ k.astype(np.float64).T) * scaling,
             **{name: np.asarray(t, dtype=np.float64) for name, t in extra.items()}}
    rows = np.ones(q.shape[0], dtype=bool) if rows is None else np.asarray(rows, dtype=bool)
    kept = np.ones_like(terms["content"], dtype=bool)
    for t in terms.values():
        kept &= t > -1e30
    kept = kept[rows]
    out = {}
    for name, t in terms.items():
        t = np.where(kept, t[rows], 0.0)
        count = np.maximum(kept.sum(axis=1, keepdims=True), 1)
        centred = np.where(kept, t - t.sum(axis=1, keepdims=True) / count, 0.0)
        out[name] = float(np.sqrt((centred ** 2).sum() / max(kept.sum(), 1))) if rows.any() else 0.0
    return out
