"""The query/key arithmetic and the data behind the interactive views."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from generator.config import Pair
from generator.patterns import PairLayout
from generator.qk import pattern_neurons, pattern_pairs
from generator.views import head_view_data, quantize, sides, word_groups


def softmax_attention(q: np.ndarray, k: np.ndarray) -> np.ndarray:
    """``softmax(q @ k.T / sqrt(d))`` row by row, for ``q``, ``k`` ``[n, d]``;
    returns ``[n, n]``. The ``1/sqrt(d)`` scale (Vaswani et al. 2017, §3.2.1)
    keeps the dot products' variance near 1 whatever ``d`` is, so the
    softmax does not saturate into one-hot rows with vanishing gradients."""
    scores = (q.astype(np.float64) @ k.astype(np.float64).T) / np.sqrt(q.shape[-1])
    scores -= scores.max(axis=-1, keepdims=True)
    e = np.exp(scores)
    return e / e.sum(axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def lm():
    from generator.model import load_model

    return load_model("sentence-transformers/all-MiniLM-L6-v2", "cpu")


def vig_layout() -> PairLayout:
    tokens = ["[CLS]", "i", "went", "to", "the", "store", ".", "[SEP]", "at", "the", "store", ",", "i", "bought",
              "fresh", "straw", "##berries", ".", "[SEP]"]
    segment = [-1] + [0] * 6 + [-1] + [1] * 10 + [-1]
    word = [-1, 0, 1, 2, 3, 4, 5, -1, 0, 1, 2, 3, 4, 5, 6, 7, 7, 8, -1]
    special = [t.startswith("[") for t in tokens]
    return PairLayout(tuple(tokens), np.array(segment, np.int8), np.array(word, np.int32), np.array(special))


def test_softmax_of_hooked_q_and_k_reproduces_every_head(lm):
    """softmax(q.k / sqrt(d) + mask) equals the model's attention to 1e-5 for
    every layer and head, on a padded batch (so the mask matters)."""
    from generator.model import capture_query_key, encode_pairs

    pairs = [Pair(id="vig", a="I went to the store.", b="At the store, I bought fresh strawberries."),
             Pair(id="short", a="Hi.", b="Hello there.")]
    out = capture_query_key(lm, encode_pairs(lm, pairs, 64))
    q, k, att, mask = (out[x].astype(np.float64) for x in ("q", "k", "attention", "mask"))
    assert q.shape[1:3] == (6, 12) and q.shape[-1] == lm.head_dim == 32
    scores = np.einsum("blhid,blhjd->blhij", q, k) / np.sqrt(lm.head_dim)
    scores = scores + np.where(mask[:, None, None, None, :] == 1, 0.0, -np.inf)
    scores -= scores.max(-1, keepdims=True)
    expected = np.exp(scores)
    expected /= expected.sum(-1, keepdims=True)
    real = mask[:, None, None, :, None] == 1  # query rows of real tokens
    diff = np.abs(np.where(real, expected - att, 0.0))
    assert diff.max() < 1e-5
    # and for one unpadded pair, the pure helper used by the page agrees
    n = int(mask[0].sum())
    np.testing.assert_allclose(softmax_attention(q[0, 2, 5, :n], k[0, 2, 5, :n]), att[0, 2, 5, :n, :n], atol=1e-5)


def test_pattern_cells():
    lay = vig_layout()
    nxt = pattern_pairs(lay, "next")
    assert nxt[1, 2] and nxt[6, 7] and not nxt[0, 1] and nxt.sum() == 16
    prev = pattern_pairs(lay, "previous")
    assert prev[1, 0] and prev[8, 7] and prev.sum() == 16
    delim = pattern_pairs(lay, "delimiter")
    assert delim[1, 0] and delim[1, 7] and delim[1, 18] and not delim[0, 7] and delim.sum() == 16 * 3
    assert pattern_pairs(lay, "same_word")[15, 16] and pattern_pairs(lay, "same_word").sum() == 2
    with pytest.raises(ValueError):
        pattern_pairs(lay, "syntax")


def test_pattern_neurons_find_the_dimension_that_matches():
    """A head whose queries and keys agree only in dimension 3 towards the
    delimiters: that dimension carries everything."""
    lay = vig_layout()
    n, d = lay.n, 8
    rng = np.random.default_rng(0)
    q = rng.normal(0, 0.01, (n, d))
    k = rng.normal(0, 0.01, (n, d))
    q[:, 3] = 2.0
    k[lay.special, 3] = 3.0
    out = pattern_neurons(q, k, lay, "delimiter", top=3)
    assert out["dims"][0] == 3
    assert out["raw_values"][0] == pytest.approx(6.0, abs=1e-3)  # q_3 k_3 = 2 * 3 at the delimiters
    # row-centred: the contribution less its mean over each query's keys, so positive
    assert 0 < out["values"][0] < out["raw_values"][0]
    assert out["pattern_dot"] == pytest.approx(6.0, abs=1e-2)
    assert out["other_dot"] == pytest.approx(0.0, abs=1e-2)
    assert out["top_share"] > 0.99 and out["dims_for_80"] == 1
    empty = pattern_neurons(q, k, PairLayout(("[CLS]", "a", "[SEP]", "b", "[SEP]"), np.array([-1, 0, -1, 1, -1]),
                                             np.array([-1, 0, -1, 0, -1]), np.array([1, 0, 1, 0, 1], bool)),
                            "same_word")
    assert empty["dims"] == [] and empty["pattern_dot"] is None


def test_word_groups_join_pieces():
    lay = vig_layout()
    groups, labels = word_groups(lay)
    assert labels[groups[15]] == "strawberries" and groups[15] == groups[16]
    assert len(labels) == lay.n - 1


def test_head_view_data_encodes_all_heads_compactly():
    lay = vig_layout()
    rng = np.random.default_rng(1)
    att = rng.random((2, 3, lay.n, lay.n))
    att /= att.sum(-1, keepdims=True)
    d = head_view_data(att, lay, head_labels=[["next"] * 3] * 2, head_links=[["x/"] * 3] * 2)
    raw = np.frombuffer(base64.b64decode(d["att"]), dtype=np.uint8).reshape(att.shape)
    np.testing.assert_array_equal(raw, quantize(att))
    assert np.abs(raw / 255 - att).max() <= 0.5 / 255 + 1e-12
    assert d["sides"] == sides(lay) == [0] * 8 + [1] * 11
    assert (d["layers"], d["heads"], d["n"]) == (2, 3, lay.n)
