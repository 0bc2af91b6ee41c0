"""The analysis orchestration: sampling for the objective and the cache round trip."""

from __future__ import annotations

import numpy as np

from generator.analysis.run import AnalysisResults, GroupResult, analysis_pairs, objective_sample
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
    res = AnalysisResults(objective="similarity", metric_name="spearman", baseline=0.4,
                          ablation=rng.normal(size=(2, 3)), ablation_metric=rng.normal(size=(2, 3)),
                          gradient=rng.random((2, 3)), gradient_raw=rng.random((2, 3)), rank_correlation=0.3,
                          impact={4: rng.random((5, 5)).astype(np.float32)}, impact_layer=1,
                          head_coords=rng.random((6, 2)).astype(np.float32), head_map_pairs=7, objective_pairs=9,
                          timings={"ablation_s": 1.0})
    res.groups.append(GroupResult("all next heads", [(0, 1)], -0.1, 0.3, (1, 2), 0.05, 4,
                                  rng.random((5, 5)).astype(np.float32), rng.random((5, 5)).astype(np.float32)))
    res.attributions[4] = {"tokens": ["[CLS]", "a", "[SEP]"], "attributions": np.array([0.0, 0.5, 0.0]),
                           "value": 0.9, "baseline_value": 0.4, "total": 0.5, "delta": 0.0, "relative_error": 0.0,
                           "n_steps": 50}
    arrays, meta = res.to_cache()
    back = AnalysisResults.from_cache(arrays, meta)
    np.testing.assert_array_equal(back.ablation, res.ablation)
    np.testing.assert_array_equal(back.impact[4], res.impact[4])
    assert back.groups[0].heads == [(0, 1)] and back.groups[0].top == (1, 2)
    np.testing.assert_array_equal(back.groups[0].after, res.groups[0].after)
    assert back.attributions[4]["value"] == 0.9
    np.testing.assert_array_equal(back.attributions[4]["attributions"], res.attributions[4]["attributions"])
    assert (back.objective_pairs, back.head_map_pairs, back.rank_correlation) == (9, 7, 0.3)
    assert back.importance_of(1, 2) == {"objective": "similarity", "ablation": round(float(res.ablation[1, 2]), 6),
                                        "gradient": round(float(res.gradient[1, 2]), 6)}
