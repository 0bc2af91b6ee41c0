"""Value-weighted attention (Kobayashi et al. 2020): the decomposition of the
attention output into per-head, per-key vectors, on the default model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from generator.budget import CATEGORY_NAMES
from generator.config import DEFAULT_MODEL, Pair
from generator.model import collate, encode_pairs, load_model
from generator.value_norms import (SINK_KEEP_MAX, SINK_RAW_MIN, attention_sinks, head_contributions, output_gram,
                                   value_norms, value_weighted)


@pytest.fixture(scope="module")
def lm():
    return load_model(DEFAULT_MODEL, "cpu")


PAIRS = [Pair(id="a", a="I went to the store.", b="At the store, I bought fresh strawberries."),
         Pair(id="b", a="他在北京工作。", b="Prices rose to 1,250.75 [SEP] dollars.")]


def test_heads_add_up_to_the_attention_output(lm):
    """sum_h sum_j alpha_ij f_h(x_j) + bias = attention.output.dense's output, every layer, 1e-5."""
    encoded = encode_pairs(lm, PAIRS, 64)
    captured = {}
    handles = []
    for layer in range(lm.layers):
        att = lm.self_attention(layer)
        handles.append(att.value.register_forward_hook(
            lambda m, a, o, layer=layer: captured.__setitem__(("v", layer), o.detach())))
        handles.append(att.register_forward_hook(
            lambda m, a, o, layer=layer: captured.__setitem__(("a", layer), o[1].detach())))
        handles.append(lm.attention_output(layer).register_forward_hook(
            lambda m, a, o, layer=layer: captured.__setitem__(("o", layer), o.detach())))
    try:
        with torch.inference_mode():
            lm.model(**collate(lm, encoded))
    finally:
        for h in handles:
            h.remove()
    for layer in range(lm.layers):
        dense = lm.attention_output(layer)
        parts = head_contributions(captured[("v", layer)], captured[("a", layer)], dense.weight)
        rebuilt = parts.sum(1) + dense.bias.float()
        torch.testing.assert_close(rebuilt, captured[("o", layer)].float(), atol=1e-5, rtol=0)


def test_value_norms_match_the_explicit_vectors(lm):
    """||f_h(x_j)|| through the Gram matrix equals the norm of (x W_V,h + b) W_O,h."""
    torch.manual_seed(0)
    dense = lm.attention_output(2)
    H, d = lm.heads, lm.head_dim
    values = torch.randn(2, 5, H * d)
    got = value_norms(values, output_gram(dense.weight, H))
    for b in range(2):
        for h in range(H):
            for j in range(5):
                f = values[b, j, h * d:(h + 1) * d] @ dense.weight.detach()[:, h * d:(h + 1) * d].T
                assert abs(float(got[b, h, j]) - float(f.norm())) < 1e-4 * max(1.0, float(f.norm()))


def test_value_weighted_rows_are_renormalised():
    alpha = torch.tensor([[[[0.5, 0.5, 0.0], [0.2, 0.3, 0.5], [1.0, 0.0, 0.0]]]])
    norms = torch.tensor([[[1.0, 3.0, 2.0]]])
    got = value_weighted(alpha, norms)[0, 0]
    expected = torch.tensor([[0.25, 0.75, 0.0], [0.2 / 2.1, 0.9 / 2.1, 1.0 / 2.1], [1.0, 0.0, 0.0]])
    torch.testing.assert_close(got, expected)


def test_attention_sinks_follow_the_thresholds():
    """Sink = raw cls+sep >= SINK_RAW_MIN and value-weighted cls+sep <= SINK_KEEP_MAX x raw, both bounds inclusive."""
    C = len(CATEGORY_NAMES)
    cls, sep, own = (CATEGORY_NAMES.index(c) for c in ("cls", "sep", "own_sentence"))
    raw = np.zeros((2, 3, C))
    weighted = np.zeros((2, 3, C))
    high = SINK_RAW_MIN + 0.2
    raw[0, :, cls], raw[0, :, sep] = 0.6 * high, 0.4 * high      # raw cls+sep well above the minimum
    weighted[0, 0, sep] = 0.5 * SINK_KEEP_MAX * high              # keeps half the allowed fraction: a sink
    weighted[0, 1, cls] = (SINK_KEEP_MAX + 0.05) * high           # keeps a little too much: not a sink
    weighted[0, 2, cls] = 0.9 * high                              # keeps 90%: not a sink
    raw[1, 0, cls] = SINK_RAW_MIN                                 # exactly at both bounds: a sink
    weighted[1, 0, cls] = SINK_KEEP_MAX * SINK_RAW_MIN
    raw[1, 1, cls] = SINK_RAW_MIN - 0.01                          # just too little raw weight: not a sink
    weighted[1, 1, cls] = 0.0
    raw[1, 2, sep] = 1.0                                          # all on [SEP], none kept: a sink
    raw[..., own] = 1 - raw.sum(-1)
    weighted[..., own] = 1 - weighted.sum(-1)
    assert attention_sinks(raw, weighted, CATEGORY_NAMES) == [(0, 0), (1, 0), (1, 2)]
