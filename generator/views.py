"""Data -> the JSON read by the interactive views in ``assets/views.js``:
the head view (bertviz-style lines), the model view (all heads of one pair as
thumbnails) and the query/key view. Arrays travel as base64 typed arrays;
attention for the line and thumbnail views is quantised to uint8 (1/255
steps), which is finer than a line's opacity or a thumbnail pixel can show.
"""

from __future__ import annotations

import math

import base64

import numpy as np

from generator.figures import escape_tokens
from generator.patterns import PairLayout


def b64(array: np.ndarray, dtype: str) -> str:
    """Base64 of ``array`` as little-endian ``dtype`` ("u1" or "f4")."""
    return base64.b64encode(np.ascontiguousarray(array, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()).decode()


def quantize(attention: np.ndarray) -> np.ndarray:
    """Attention weights in [0, 1] -> uint8 0..255 (same shape)."""
    return np.clip(np.rint(np.asarray(attention, dtype=np.float64) * 255), 0, 255).astype(np.uint8)


def sides(layout: PairLayout) -> list[int]:
    """Sentence of every position for the A/B filters: 0 up to and including
    the first separator ([CLS] a [SEP]), 1 after it (b [SEP])."""
    out, side = [], 0
    for pos in range(layout.n):
        out.append(side)
        if layout.special[pos] and pos > 0 and side == 0:
            side = 1
    return out


def word_groups(layout: PairLayout) -> tuple[list[int], list[str]]:
    """Group each token with the other pieces of its word.

    Returns ``(group of each token [n], label of each group)``; special tokens
    are groups of their own; labels join the pieces ("straw ##berries" ->
    "strawberries") and are HTML-escaped for Plotly.
    """
    groups: list[int] = []
    labels: list[str] = []
    key_of_group: dict[tuple[int, int], int] = {}
    for pos, tok in enumerate(layout.tokens):
        if layout.special[pos]:
            groups.append(len(labels))
            labels.append(tok)
            continue
        key = (int(layout.segment[pos]), int(layout.word[pos]))
        if key in key_of_group and groups and groups[-1] == key_of_group[key]:
            g = key_of_group[key]
            labels[g] += tok[2:] if tok.startswith("##") else tok
        else:
            g = len(labels)
            key_of_group[key] = g
            labels.append(tok)
        groups.append(g)
    return groups, escape_tokens(labels)


def head_view_data(attention: np.ndarray, layout: PairLayout, *, head_labels=None, head_links=None,
                   start: tuple[int, int] = (0, 0)) -> dict:
    """JSON for one head view. ``attention``: ``[n, n]`` (one head) or
    ``[layers, heads, n, n]`` (all heads of the pair; the view gets layer and
    head selectors and the model view reads the same data). ``head_labels``
    / ``head_links``: ``[layers][heads]`` label and head-page link."""
    att = np.asarray(attention)
    if att.ndim == 2:
        att = att[None, None]
    layers, heads, n, _ = att.shape
    groups, group_labels = word_groups(layout)
    return {
        "tokens": escape_tokens(layout.tokens), "sides": sides(layout), "n": n, "layers": layers, "heads": heads,
        "att": b64(quantize(att), "u1"), "groups": groups, "group_labels": group_labels,
        "labels": head_labels, "links": head_links, "start": list(start),
    }


def qk_view_data(q: np.ndarray, k: np.ndarray, attention: np.ndarray, layout: PairLayout, start_query: int,
                 scaling: float | None = None, extra: dict[str, np.ndarray] | None = None,
                 term_sizes: dict[str, float] | None = None) -> dict:
    """JSON for the query/key view of one head on one pair.

    Args:
        q, k: ``[n, d]`` float32 queries and keys (after any rotary embedding).
        attention: ``[n, n]`` the model's attention (the browser checks its softmax against it).
        layout: the pair's tokens.
        start_query: the query row shown first.
        scaling: the factor on ``q . k`` in the logits (default ``1/sqrt(d)``,
            Vaswani et al. 2017, eq. 1; DeBERTa: ``1/sqrt(3d)``).
        extra: term name -> ``[n, n]`` logits the architecture adds (DeBERTa's
            c2p/p2c, MPNet's position bias, a local-window mask); summed into
            one ``[n, n]`` array for the browser.
        term_sizes: term name -> its row-centred size
            (:func:`generator.qk.logit_term_sizes`), named under the view.

    Returns:
        The view's JSON: tokens, ``n``, ``d``, ``q``, ``k``, ``att``, ``scale``,
        ``extra`` (or ``None``) and ``terms`` (``[name, size]`` pairs).
    """
    n, d = q.shape
    total = None
    if extra:
        total = np.zeros((n, n), dtype=np.float64)
        for term in extra.values():
            total += np.maximum(np.asarray(term, dtype=np.float64), -1e30)  # a mask term: -1e30, exp() gives 0
    return {"tokens": escape_tokens(layout.tokens), "n": n, "d": d, "q": b64(q, "f4"), "k": b64(k, "f4"),
            "att": b64(attention, "f4"), "start": int(start_query), "special": [bool(x) for x in layout.special],
            "scale": float(scaling) if scaling is not None else 1.0 / math.sqrt(d),
            "extra": None if total is None else b64(total.astype(np.float32), "f4"),
            "terms": [[name, round(float(v), 4)] for name, v in (term_sizes or {}).items()]}
