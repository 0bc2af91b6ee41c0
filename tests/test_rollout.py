"""Attention rollout against a literal, loop-by-loop implementation."""

from __future__ import annotations

import numpy as np
import pytest

from generator.rollout import rollout


def rollout_literal(attention: np.ndarray) -> np.ndarray:
    """Abnar and Zuidema (2020), section 3, one cell at a time."""
    L, H, n, _ = attention.shape
    out = np.zeros((L, n, n))
    previous = [[1.0 if i == j else 0.0 for j in range(n)] for i in range(n)]
    for layer in range(L):
        mixed = [[0.0] * n for _ in range(n)]
        for i in range(n):
            for j in range(n):
                mean = sum(attention[layer, h, i, j] for h in range(H)) / H
                mixed[i][j] = 0.5 * mean + (0.5 if i == j else 0.0)
            row = sum(mixed[i])
            mixed[i] = [v / row for v in mixed[i]]
        current = [[sum(mixed[i][k] * previous[k][j] for k in range(n)) for j in range(n)] for i in range(n)]
        out[layer] = current
        previous = current
    return out


def random_attention(rng, L, H, n):
    logits = rng.normal(size=(L, H, n, n)) * 3
    a = np.exp(logits)
    return a / a.sum(-1, keepdims=True)


@pytest.mark.parametrize("shape", [(1, 1, 2), (3, 4, 5), (6, 12, 9)])
def test_rollout_matches_literal(shape):
    A = random_attention(np.random.default_rng(sum(shape)), *shape)
    got = rollout(A)
    np.testing.assert_allclose(got, rollout_literal(A), atol=1e-12)
    np.testing.assert_allclose(got.sum(-1), 1.0, atol=1e-12)


def test_rollout_of_identity_attention_is_identity():
    n = 4
    A = np.broadcast_to(np.eye(n), (3, 2, n, n))
    np.testing.assert_allclose(rollout(A), np.broadcast_to(np.eye(n), (3, n, n)))


def test_rollout_rejects_wrong_shape():
    with pytest.raises(ValueError, match="layers, heads, n, n"):
        rollout(np.ones((2, 3, 4)))
