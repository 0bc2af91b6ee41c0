"""Attention rollout (Abnar and Zuidema 2020, "Quantifying Attention Flow in
Transformers", ACL, section 3): how much of each input token reaches each
position after ``l + 1`` layers, modelling the residual connection as an
identity matrix mixed in with the head-mean attention.
"""

from __future__ import annotations

import numpy as np


def rollout(attention: np.ndarray) -> np.ndarray:
    """Attention rollout of one pair, layer by layer.

    Args:
        attention: ``[layers, heads, n, n]`` (rows = query, each sums to 1).

    Returns:
        ``[layers, n, n]`` float64: entry ``[l, i, j]`` is how much of input
        token j reaches position i after layers 0..l. With
        ``Â_l = 0.5 * mean_h A_l + 0.5 * I`` (rows renormalised),
        ``R_0 = Â_0`` and ``R_l = Â_l R_{l-1}``. Every row sums to 1.

    Raises:
        ValueError: when ``attention`` is not ``[layers, heads, n, n]``.
    """
    A = np.asarray(attention, dtype=np.float64)
    if A.ndim != 4 or A.shape[-1] != A.shape[-2]:
        raise ValueError(f"attention must be [layers, heads, n, n], got shape {A.shape}")
    n = A.shape[-1]
    mixed = 0.5 * A.mean(axis=1) + 0.5 * np.eye(n)
    mixed /= mixed.sum(-1, keepdims=True)
    out = np.empty_like(mixed)
    current = np.eye(n)
    for layer in range(len(mixed)):
        current = mixed[layer] @ current
        out[layer] = current
    return out
