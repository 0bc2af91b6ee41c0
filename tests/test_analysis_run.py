"""The analysis orchestration: sampling for the objective and the cache round trip."""

from __future__ import annotations

import numpy as np

from generator.analysis.run import AnalysisResults, GroupResult, analysis_pairs, head_map_sample, objective_sample
from generator.scoring import HeadSummary


def test_objective_sample_is_even_and_bounded():
    assert objective_sample(5, 256) == [0, 1, 2, 3, 4]
    s = objective_sample(10_000, 256)
    assert len(s) == 256 and s[0] == 0 and s[-1] == 9_999
    gaps = np.diff(s)
    assert gaps.min() >= 39 and gaps.max() <= 40


def test_analysis_pairs_prefers_the_most_shown():
    heads = [HeadSummary(0, h, {}, "next", "next", 1.0, ex) for h, ex in enumerate([[3, 1], [3, 2], [5, 3]])]
    assert analysis_pairs(heads, [1, 2, 3, 5], 2) == [3, 1]
    assert analysis_pairs(heads, [1, 2, 3, 5], 0) == []


def test_results_survive_the_cache_round_trip():
    rng = np.random.default_rng(0)
    ci = np.sort(rng.normal(size=(2, 3, 2)), axis=-1)
    res = AnalysisResults(objective="similarity", metric_name="spearman", baseline=0.4,
                          ablation_effect=rng.random((2, 3)), ablation_effect_ci=ci, loss_change=rng.normal(size=(2, 3)),
                          loss_change_ci=ci, loss_change_overlaps_zero=(ci[..., 0] <= 0) & (ci[..., 1] >= 0),
                          metric_change=rng.normal(size=(2, 3)), metric_change_ci=ci,
                          metric_change_overlaps_zero=(ci[..., 0] <= 0) & (ci[..., 1] >= 0),
                          ablation_metric=rng.normal(size=(2, 3)), gradient_raw=rng.random((2, 3)),
                          gradient_layer_normalized=rng.random((2, 3)), rank_correlation=0.3, bootstrap_resamples=1000,
                          impact={4: rng.random((5, 5)).astype(np.float32)}, impact_layer=1, impact_mask_token="[MASK]",
                          impact_note="weaker", head_coords=rng.random((6, 2)).astype(np.float32), head_map_pairs=7,
                          head_map_sample=[0, 3], objective_pairs=9, timings={"ablation_s": 1.0},
                          inputs={"importance": {"input": "separate", "reason": "r"}},
                          skipped={"perturbed_masking": "no masked-LM head"})
    res.groups.append(GroupResult("all next heads", [(0, 1)], -0.1, 0.3, (1, 2), 0.05, 4,
                                  rng.random((5, 5)).astype(np.float32), rng.random((5, 5)).astype(np.float32)))
    res.attributions[4] = {"tokens": ["[CLS]", "a", "[SEP]"], "attributions": np.array([0.0, 0.5, 0.0]),
                           "value": 0.9, "baseline_value": 0.4, "total": 0.5, "delta": 0.0, "relative_error": 0.0,
                           "n_steps": 50, "how_to_read": "h"}
    arrays, meta = res.to_cache()
    back = AnalysisResults.from_cache(arrays, meta)
    for name in ("ablation_effect", "ablation_effect_ci", "metric_change", "metric_change_overlaps_zero",
                 "gradient_raw", "gradient_layer_normalized"):
        np.testing.assert_array_equal(getattr(back, name), getattr(res, name))
    np.testing.assert_array_equal(back.impact[4], res.impact[4])
    assert back.groups[0].heads == [(0, 1)] and back.groups[0].top == (1, 2)
    np.testing.assert_array_equal(back.groups[0].after, res.groups[0].after)
    assert back.attributions[4]["value"] == 0.9 and back.attributions[4]["how_to_read"] == "h"
    np.testing.assert_array_equal(back.attributions[4]["attributions"], res.attributions[4]["attributions"])
    assert (back.objective_pairs, back.head_map_pairs, back.rank_correlation) == (9, 7, 0.3)
    assert (back.skipped, back.inputs, back.head_map_sample) == (res.skipped, res.inputs, [0, 3])
    got = back.importance_of(1, 2)
    assert got["ablation_effect"] == round(float(res.ablation_effect[1, 2]), 6)
    assert got["ablation_ci"] == [round(float(x), 6) for x in ci[1, 2]]
    assert got["metric_change"] == round(float(res.metric_change[1, 2]), 6)
    assert got["gradient"] == round(float(res.gradient_raw[1, 2]), 6) and got["metric"] == "spearman"
    assert back.importance_order()[0] == divmod(int(np.argmin(res.metric_change)), 3)


def test_head_map_sample_is_seeded_and_bounded():
    s = head_map_sample(1000, 200, seed=0)
    assert len(s) == 200 == len(set(s)) and s == sorted(s) and s == head_map_sample(1000, 200, seed=0)
    assert s != head_map_sample(1000, 200, seed=1)
    assert head_map_sample(5, 200, seed=0) == [0, 1, 2, 3, 4]


def test_head_map_sample_does_not_change_with_pair_pages(tmp_path):
    """The head map averages over a seeded sample of the corpus, not over the
    pairs that get pages: the same sample and map for pair_pages examples and
    all. Perturbed masking on 'auto' does not run on the default model (no
    masked-LM head) and says so; analyses switched off say so."""
    from conftest import small_corpus_items, write_project

    from generator.config import load_config, load_corpus
    from generator.pipeline import compute

    results = []
    for pages in ("examples", "all"):
        path = write_project(tmp_path / pages, small_corpus_items(6), pair_pages=pages,
                             analysis={"head_map": True, "head_map_pairs": 4, "perturbed_masking": "auto"})
        cfg = load_config(path)
        results.append(compute(cfg, load_corpus(cfg.corpus_path), progress=False).analysis)
    examples, every = results
    assert examples.head_map_sample == every.head_map_sample and len(examples.head_map_sample) == 4
    np.testing.assert_array_equal(examples.head_coords, every.head_coords)
    assert "no masked-LM head" in examples.skipped["perturbed_masking"]
    assert "analysis.importance = false" in examples.skipped["importance"]
    assert examples.inputs["head_map"]["input"] == "joint" and examples.impact == {}
