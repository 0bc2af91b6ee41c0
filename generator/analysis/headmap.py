"""A map of the heads by how alike they attend (Clark et al. 2019, "What Does
BERT Look At?", section 6, "Clustering Attention Heads").

Distance between heads ``H_k`` and ``H_l``: the Jensen-Shannon divergence of
their attention distributions, averaged over every query token of every pair,

    ``D(k, l) = mean_{pairs p, queries i} JS(A_p^k[i, :], A_p^l[i, :])``

(Clark et al. sum over the tokens of their data; the mean differs only by the
constant token count). ``JS(P, Q) = H((P + Q) / 2) - (H(P) + H(Q)) / 2``
(Lin 1991), base-2 logarithm, so ``0 <= JS <= 1`` bit; ``0 log 0 = 0``.
The map places the ``layers * heads`` heads in 2-D with metric MDS on ``D``
(scikit-learn's SMACOF), as Clark et al.'s figure 6.
"""

from __future__ import annotations

import inspect
import math

import numpy as np
import torch

LN2 = math.log(2.0)


def _entropy_bits(p: torch.Tensor) -> torch.Tensor:
    return -torch.special.xlogy(p, p).sum(-1) / LN2


def head_distances(attentions: list[np.ndarray], block: int = 8) -> np.ndarray:
    """Clark et al.'s head-to-head distance matrix.

    ``attentions``: one array per pair, ``[layers, heads, n, n]`` (rows =
    query, padding removed, each row sums to 1; ``n`` may differ between
    pairs), e.g. from :func:`generator.model.attention_for`. Returns ``[K,
    K]`` float64, ``K = layers * heads`` in layer-major order (head ``(l, h)``
    is row ``l * heads + h``): symmetric, 0 on the diagonal, in bits.
    ``block`` heads are compared against the later heads at a time (only the
    upper triangle is computed; peak memory ``block * K * n * n`` doubles).
    Raises :class:`ValueError` for an empty list or arrays of different head
    counts or non-square attention.
    """
    if not attentions:
        raise ValueError("head_distances needs the attention of at least one pair")
    shape = attentions[0].shape[:2]
    total, count = None, 0
    for a in attentions:
        if a.ndim != 4 or a.shape[:2] != shape or a.shape[2] != a.shape[3]:
            raise ValueError(f"every attention must be [layers, heads, n, n] with the same layers and heads; "
                             f"got {list(a.shape)} after {list(attentions[0].shape)}")
        K, n = shape[0] * shape[1], a.shape[2]
        A = torch.as_tensor(np.asarray(a, dtype=np.float64)).reshape(K, n, n)
        h = _entropy_bits(A)  # [K, n]
        if total is None:
            total = torch.zeros(K, K, dtype=torch.float64)
        for start in range(0, K, block):  # upper triangle only: JS is symmetric
            stop = min(start + block, K)
            P = A[start:stop]  # [b, n, n]
            hm = _entropy_bits((P[:, None] + A[None, start:]) / 2)  # [b, K - start, n]
            js = hm - (h[start:stop, None] + h[None, start:]) / 2
            total[start:stop, start:] += js.clamp(min=0).sum(-1)
        count += n
    d = torch.triu(total / count, diagonal=1).numpy()
    return d + d.T


def head_map(distances: np.ndarray, random_state: int = 0, n_init: int = 4) -> np.ndarray:
    """2-D coordinates ``[K, 2]`` float64 of the heads from a ``[K, K]``
    precomputed distance matrix: ``sklearn.manifold.MDS`` (metric, SMACOF,
    ``n_components=2``, dissimilarity precomputed, random initialisation,
    ``n_init`` starts, ``random_state``); deterministic for a given
    ``random_state``. Coordinates are in the distances' units (bits), defined
    up to rotation and reflection. Raises :class:`ValueError` for a matrix
    that is not square, not symmetric or has negative entries."""
    from sklearn.manifold import MDS

    d = np.asarray(distances, dtype=np.float64)
    if d.ndim != 2 or d.shape[0] != d.shape[1]:
        raise ValueError(f"distances must be a square [K, K] matrix, not {list(d.shape)}")
    if not np.allclose(d, d.T) or (d < 0).any():
        raise ValueError("distances must be symmetric and non-negative")
    params = inspect.signature(MDS).parameters
    if "metric_mds" in params:  # scikit-learn >= 1.8: 'dissimilarity' was renamed 'metric'
        mds = MDS(n_components=2, metric_mds=True, metric="precomputed", init="random", n_init=n_init,
                  random_state=random_state)
    else:
        mds = MDS(n_components=2, dissimilarity="precomputed", n_init=n_init, random_state=random_state)
    return mds.fit_transform(d)
