"""pattern_neurons ranks q/k dimensions by their row-centred contribution
(only what differs between a query row's keys moves the softmax)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from generator.patterns import PairLayout
from generator.qk import pattern_neurons, pattern_pairs


def layout() -> PairLayout:
    tokens = ("[CLS]", "the", "cat", "[SEP]", "a", "cat", "sat", "[SEP]")
    special = np.array([1, 0, 0, 1, 0, 0, 0, 1], dtype=bool)
    segment = np.array([-1, 0, 0, -1, 1, 1, 1, -1], dtype=np.int8)
    word = np.array([-1, 0, 1, -1, 0, 1, 2, -1], dtype=np.int32)
    return PairLayout(tokens=tokens, segment=segment, word=word, special=special)


def test_ranking_ignores_what_every_key_of_a_row_shares():
    """A key bias b adds q_i . b to every logit of row i: the softmax, and so
    the ranking by contrast, must not change; the uncentred product does."""
    lay = layout()
    rng = np.random.default_rng(0)
    q = rng.normal(size=(lay.n, 6))
    k = rng.normal(size=(lay.n, 6))
    b = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 25.0])  # a large bias in dimension 5
    for pattern in ("delimiter", "next", "other_sentence"):
        plain = pattern_neurons(q, k, lay, pattern, top=6)
        biased = pattern_neurons(q, k + b, lay, pattern, top=6)
        assert plain["dims"] == biased["dims"]
        np.testing.assert_allclose(plain["values"], biased["values"], atol=1e-9)
        assert plain["pattern_contrast"] == pytest.approx(biased["pattern_contrast"], abs=1e-9)
    # by the uncentred product the bias dimension would be ranked first or last
    raw = (q[:, None, :] * (k + b)[None, :, :])[pattern_pairs(lay, "delimiter")].mean(0)
    assert int(np.argmax(np.abs(raw))) == 5


def test_contrast_is_the_row_centred_mean_computed_literally():
    lay = layout()
    rng = np.random.default_rng(1)
    q = rng.normal(size=(lay.n, 4))
    k = rng.normal(size=(lay.n, 4))
    cells = pattern_pairs(lay, "delimiter")
    values = []
    for i, j in zip(*np.nonzero(cells)):
        values.append([q[i, t] * k[j, t] - np.mean([q[i, t] * k[jj, t] for jj in range(lay.n)]) for t in range(4)])
    want = np.mean(values, axis=0)
    out = pattern_neurons(q, k, lay, "delimiter", top=4)
    assert out["dims"] == [int(x) for x in np.argsort(-want, kind="stable")]
    np.testing.assert_allclose(out["values"], np.sort(want)[::-1], atol=1e-12)
    assert out["method"].startswith("Dimensions are ranked by their contrast")


def test_a_dimension_only_the_delimiters_light_up_comes_first():
    lay = layout()
    rng = np.random.default_rng(2)
    q = rng.normal(0, 0.01, (lay.n, 5))
    k = rng.normal(0, 0.01, (lay.n, 5))
    q[:, 3] = 2.0
    k[lay.special, 3] = 3.0
    out = pattern_neurons(q, k, lay, "delimiter", top=2)
    share = lay.special.mean()
    assert out["dims"][0] == 3
    assert out["values"][0] == pytest.approx(2.0 * 3.0 * (1 - share), abs=1e-2)  # 3 minus the row mean of k[:, 3]
    assert out["raw_values"][0] == pytest.approx(6.0, abs=1e-2)
    assert out["top_share"] > 0.99 and out["dims_for_80"] == 1


def test_logit_term_sizes_are_row_centred_root_mean_squares():
    """A term that adds the same to every key of a row has size 0 (softmax
    ignores it); otherwise the size is the literal row-centred RMS."""
    from generator.qk import logit_term_sizes

    rng = np.random.default_rng(3)
    q, k = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
    row_constant = np.repeat(rng.normal(size=(5, 1)), 5, axis=1)
    bias = rng.normal(size=(5, 5))
    sizes = logit_term_sizes(q, k, 0.5, {"row": row_constant, "bias": bias})
    assert list(sizes) == ["content", "row", "bias"]
    assert sizes["row"] == pytest.approx(0.0, abs=1e-12)
    content = q @ k.T * 0.5
    want = math.sqrt(sum((content[i, j] - content[i].mean()) ** 2 for i in range(5) for j in range(5)) / 25)
    assert sizes["content"] == pytest.approx(want, rel=1e-12)
    rows = np.array([True, False, True, False, False])
    some = logit_term_sizes(q, k, 0.5, {"bias": bias}, rows=rows)
    want = math.sqrt(sum((bias[i, j] - bias[i].mean()) ** 2 for i in (0, 2) for j in range(5)) / 10)
    assert some["bias"] == pytest.approx(want, rel=1e-12)
