"""Comparing two checkpoints head by head (``compare:``)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from generator.compare import (CROSS_SCORE, CROSS_SHARE, CompareResults, HeadChange, check_compatible, compare_models, grown_heads,
                               js_divergence_rows, largest_shifts, shares_change)
from generator.config import DEFAULT_MODEL, Pair, load_config
from generator.errors import AtlasError
from generator.registry import PATTERNS, REGISTRY

ROOT = Path(__file__).resolve().parent.parent
THRESHOLDS = {p.name: p.threshold for p in REGISTRY}


def _finetune_module():
    spec = importlib.util.spec_from_file_location("finetune_example", ROOT / "examples" / "finetune" / "finetune.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def lm():
    from generator.model import load_model

    return load_model(DEFAULT_MODEL, "cpu")


@pytest.fixture(scope="module")
def pairs() -> list[Pair]:
    items = yaml.safe_load((ROOT / "content" / "corpus.yml").read_text(encoding="utf-8"))[:5]
    return [Pair.model_validate(i) for i in items]


# ------------------------------------------------------------------ divergence


def test_js_divergence_is_zero_for_equal_rows_one_for_disjoint_and_symmetric():
    p = torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.1, 0.2, 0.3, 0.4]])
    q = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.4, 0.3, 0.2, 0.1]])
    assert js_divergence_rows(p, p).abs().max().item() < 1e-7
    js = js_divergence_rows(p, q)
    assert js[0].item() == pytest.approx(1.0, abs=1e-6)  # disjoint supports: 1 bit
    assert torch.allclose(js, js_divergence_rows(q, p))
    # the second row by the definition, written out with numpy
    a, b = p[1].numpy().astype(float), q[1].numpy().astype(float)
    m = (a + b) / 2
    expected = 0.5 * np.sum(a * np.log2(a / m)) + 0.5 * np.sum(b * np.log2(b / m))
    assert js[1].item() == pytest.approx(expected, rel=1e-5)


# ------------------------------------------------------------------ per-head dicts


def _change(layer, head, before, after, budget_before=None, budget_after=None, js=0.0):
    return HeadChange(layer=layer, head=head, before_scores=before, after_scores=after,
                      score_change=shares_change(before, after), before_label="mixed", after_label="mixed",
                      js_divergence=js, before_budget=budget_before, after_budget=budget_after,
                      budget_change=shares_change(budget_before, budget_after))


def test_shares_change_keeps_undefined_values_undefined():
    assert shares_change({"a": 0.25, "b": None}, {"a": 0.5, "b": 0.1}) == {"a": 0.25, "b": None}
    assert shares_change(None, {"a": 1.0}) is None


def test_budget_dicts_drive_the_shifts_and_the_masked_group_when_present():
    scores = {p: 0.1 for p in PATTERNS}
    base = {CROSS_SHARE: 0.1, "sep": 0.5}
    heads = [_change(0, 0, scores, scores, base, {CROSS_SHARE: 0.4, "sep": 0.15}),
             _change(0, 1, scores, {**scores, CROSS_SCORE: 0.9}, base, {CROSS_SHARE: 0.15, "sep": 0.5})]
    shifts = largest_shifts(heads, 2)
    assert [(s.head, s.kind, s.name) for s in shifts] == [(1, "score", CROSS_SCORE), (0, "budget", "sep")]
    assert shifts[1].change == pytest.approx(-0.35)
    # with budgets the group follows the budget share, not the score
    assert grown_heads(heads, 1) == ([(0, 0)], CROSS_SHARE)
    no_budget = [dataclasses.replace(h, before_budget=None, after_budget=None, budget_change=None) for h in heads]
    assert grown_heads(no_budget, 1) == ([(0, 1)], CROSS_SCORE)


# ------------------------------------------------------------------ checks


def test_shape_and_vocabulary_mismatch_name_both_sides(lm):
    smaller = dataclasses.replace(lm, layers=3, name_or_path="small-model")
    with pytest.raises(AtlasError) as err:
        check_compatible(lm, smaller)
    assert "3 layers x 12 heads" in str(err.value) and "6 layers x 12 heads" in str(err.value)
    assert "small-model" in str(err.value)

    class OtherVocab:
        def get_vocab(self):
            return {"[CLS]": 0, "[SEP]": 1}

    with pytest.raises(AtlasError, match="vocabulary of 2 tokens"):
        check_compatible(lm, dataclasses.replace(lm, tokenizer=OtherVocab(), name_or_path="other"))


def test_compare_section_is_validated(tmp_path):
    path = tmp_path / "site_config.yml"
    path.write_text("compare:\n  before_name: base\n", encoding="utf-8")
    with pytest.raises(AtlasError, match="compare.name_or_path"):
        load_config(path)
    path.write_text("compare:\n  name_or_path: x\n  colour: red\n", encoding="utf-8")
    with pytest.raises(AtlasError, match="compare.colour"):
        load_config(path)
    path.write_text("compare:\n  name_or_path: x\n", encoding="utf-8")
    ccfg = load_config(path).raw.compare
    assert (ccfg.before_name, ccfg.after_name) == ("pre-trained", "fine-tuned")


# ------------------------------------------------------------------ the comparison itself


def test_a_checkpoint_compared_with_itself_changes_nothing(lm, pairs):
    from generator.model import encode_pairs
    from generator.scoring import score_corpus, summarise_heads

    encoded = encode_pairs(lm, pairs, 64)
    result = compare_models(lm, lm, encoded, THRESHOLDS, 2, 2, page_pairs=[0, 3], progress=False)
    assert result.rows == sum(int((~e.layout.special).sum()) for e in encoded)
    assert np.all(result.js == 0.0)
    for c in result.heads:
        assert not c.label_changed
        assert all(v is None or v == 0.0 for v in c.score_change.values())
        assert c.as_json()["js_divergence"] == 0.0
    assert all(b == a for _, b, a in result.label_counts())
    assert largest_shifts(result.heads, 5)[0].change == 0.0
    # the "before" side is the atlas's own scoring of the model
    scores, sums, budget = score_corpus(lm, encoded, 2, progress=False)
    own = summarise_heads(scores, sums, THRESHOLDS, 2, budget=budget)
    assert [h.scores for h in own] == [c.before_scores for c in result.heads]
    # ... and its raw attention budget (the comparison computes no value norms)
    for h, c in zip(own, result.heads):
        assert c.before_budget.keys() == h.budget.keys()
        assert all(abs(c.before_budget[k] - h.budget[k]) < 1e-5 for k in h.budget)
        assert all(v == 0.0 for v in c.budget_change.values())
    assert sorted(result.after_attention) == [0, 3]
    # the cache round trip keeps everything the pages read
    again = CompareResults.from_cache(*result.to_cache())
    assert again.heads == result.heads and again.before_heads == result.before_heads
    assert np.array_equal(again.js, result.js) and np.array_equal(again.after_attention[3], result.after_attention[3])
    assert result.after_attention[3].shape == (lm.layers, lm.heads, len(encoded[3].input_ids),
                                               len(encoded[3].input_ids))


# ------------------------------------------------------------------ the example, end to end


def test_fine_tuned_example_builds_a_comparison_site_with_real_differences(tmp_path, pairs):
    from generator.cli import run_build
    from generator.model import resolve_model_path

    ft = _finetune_module()
    items = ft.graded_items(pairs, Path("corpus.yml"))
    assert {i["label"] for i in items} <= set(range(ft.GRADES))
    stats = ft.fine_tune(items, tmp_path / "model", max_steps=3, batch_size=4, max_length=64, lr=1e-3)
    assert stats["steps"] == 3
    # the encoder's weights really changed
    from safetensors.numpy import load_file

    original = load_file(str(Path(resolve_model_path(DEFAULT_MODEL)) / "model.safetensors"))
    tuned = load_file(str(tmp_path / "model" / "model.safetensors"))
    name = next(k for k in tuned if k.endswith("encoder.layer.0.attention.self.query.weight"))
    plain = name.split("bert.", 1)[-1]
    before = original.get(plain, original.get(name))
    assert not np.allclose(before, tuned[name])

    config = ft.write_project(tmp_path / "project", items, tmp_path / "model",
                              model={"max_length": 64}, compute={"device": "cpu", "batch_size": 8},
                              examples_per_head=1, pair_pages="examples",
                              analysis={"importance": False, "group_masking": False, "head_map": False},
                              compare={"group_size": 2})
    timings = run_build(config, progress=False)
    assert "compare_s" in timings
    site = tmp_path / "project" / "site"
    page = (site / "compare" / "index.html").read_text(encoding="utf-8")
    assert "What fine-tuning changed" in page and "Which heads the classifier needs" in page
    heads = json.loads((site / "data" / "heads.json").read_text(encoding="utf-8"))["heads"]
    assert len(heads) == 72 and all("compare" in h for h in heads)
    assert max(h["compare"]["js_divergence"] for h in heads) > 0
    assert any(abs(v) > 0 for h in heads for v in h["compare"]["score_change"].values() if v is not None)
    head_page = (site / "heads" / "layer-00-head-00" / "index.html").read_text(encoding="utf-8")
    assert "enhanced after fine-tuning" in head_page and "weakened after fine-tuning" in head_page
    pair_page = next((site / "pairs").glob("p*/index.html")).read_text(encoding="utf-8")
    assert "What fine-tuning changed on this pair" in pair_page
    grid = pair_page.split('class="atlas-diffgrid"', 1)[1].split("</div>\n<h2", 1)[0]
    assert grid.count('title="layer ') == 72  # one thumbnail per head
    assert "#b2182b" in grid and "#2166ac" in grid  # the diverging scale: enhanced red, weakened blue
    # a rebuild reads the comparison (classification experiment included) from the cache
    timings = run_build(config, progress=False)
    assert "compare_s" not in timings
    assert (site / "compare" / "index.html").read_text(encoding="utf-8") == page
