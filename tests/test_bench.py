"""The benchmark cannot rot: ``python -m generator.bench --quick`` runs end to
end (real builds, a tiny random model), writes bench.json with every key, and
the README's Performance section renders from it. Plus the site-size budget:
the site of a 300-pair corpus is the site of a 30-pair corpus plus the bigger
corpus table, within 10%. No test here asserts a timing."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from generator import bench

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def quick_bench(tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("bench")
    out = work / "bench.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    proc = subprocess.run([sys.executable, "-m", "generator.bench", "--quick", "--work", str(work), "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, f"bench --quick failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return {"doc": json.loads(out.read_text()), "stdout": proc.stdout, "out": out, "work": work}


# ------------------------------------------------------------------ corpora

def test_bench_corpora_are_deterministic_unique_prefixes():
    small, big = bench.bench_corpus(300), bench.bench_corpus(3000)
    assert len(small) == 300 and len(big) == 3000
    assert big[:300] == small  # each size is a prefix of the next
    assert bench.bench_corpus(3000) == big  # fixed seed
    ids = [p["id"] for p in big]
    assert len(set(ids)) == len(ids)
    assert len({(p["a"], p["b"]) for p in big}) == len(big)
    assert bench.bench_corpus(30) == bench.bench_corpus(300)[:30]
    with pytest.raises(ValueError, match="at most"):
        bench.bench_corpus(10**7)


def test_bench_corpus_past_the_two_sentence_pairs_joins_three_sentences():
    """The GPU plan's 100,000 pairs: past every two-sentence recombination
    come pairs whose first sentence joins two sentences; still unique, still
    a prefix of any larger corpus, every text made of the shipped sentences."""
    import yaml

    shipped = yaml.safe_load((ROOT / "content" / "corpus.yml").read_text(encoding="utf-8"))
    sentences = {text for item in shipped for text in (item["a"], item["b"])}
    two = [p for p in bench.bench_corpus(20_000) if p["id"].startswith("mix-")]
    big = bench.bench_corpus(20_000)
    assert big == bench.bench_corpus(30_000)[:20_000]
    three = [p for p in big if p["id"].startswith("mix3-")]
    assert len(shipped) + len(two) + len(three) == 20_000 and three
    assert big.index(three[0]) == len(shipped) + len(two)  # after every two-sentence pair
    assert len({p["id"] for p in big}) == len({(p["a"], p["b"]) for p in big}) == 20_000
    for p in three:
        assert p["b"] in sentences and p["a"] not in sentences
        assert any(p["a"].startswith(x + " ") and p["a"][len(x) + 1:] in sentences for x in sentences)


# -------------------------------------------------------------------- plans

def test_plans_name_known_models_possible_corpora_and_both_analysis_settings():
    cpu, gpu = bench.PLANS["cpu"], bench.PLANS["gpu"]
    assert (cpu.device, gpu.device) == ("cpu", "cuda")
    assert cpu.out != gpu.out
    for plan in (cpu, gpu):
        assert len(set(plan.runs)) == len(plan.runs)
        for run in plan.runs:
            assert run.model == "default" or run.model in bench.RANDOM_MODELS
        assert {run.analysis for run in plan.runs} == {False, True}  # analyses off and on
        assert any(run.model == "bert-base-random" for run in plan.runs)
    # the CPU plan: 10,000 pairs with analyses off, the analyses on a smaller corpus
    assert bench.PlannedRun("default", 10_000, False) in cpu.runs
    # the default analyses at the size the target names (their cost is bounded by their settings)
    assert bench.PlannedRun("default", 10_000, True) in cpu.runs
    assert max(run.pairs for run in gpu.runs) == 100_000


def test_plan_runs_are_the_plan_or_the_combinations_asked_for():
    cpu = bench.PLANS["cpu"]
    assert bench.plan_runs(cpu) == list(cpu.runs)
    assert bench.plan_runs(cpu, sizes=[30], models=["default"]) == [bench.PlannedRun("default", 30, False)]
    both = bench.plan_runs(cpu, sizes=[30, 300], models=["bert-tiny-random"], analysis="both")
    assert both == [bench.PlannedRun("bert-tiny-random", n, a) for n in (30, 300) for a in (False, True)]
    # sizes alone: the plan's models, in the plan's order
    assert [r.model for r in bench.plan_runs(cpu, sizes=[30])] == ["default", "bert-base-random"]


def test_list_prints_the_plan_and_runs_nothing(capsys, tmp_path):
    out = tmp_path / "never.json"
    assert bench.main(["--list", "--plan", "gpu", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "device cuda" in text and "100000 pairs" in text
    assert not out.exists()


@pytest.mark.slow
def test_bench_corpus_of_10000_pairs_validates(tmp_path):
    from generator.config import load_corpus

    items = bench.bench_corpus(10_000)
    project = bench.write_bench_project(tmp_path / "p", items, "sentence-transformers/all-MiniLM-L6-v2")
    assert project.exists()
    assert len(load_corpus(tmp_path / "p" / "content" / "corpus.yml")) == 10_000


# -------------------------------------------------------------- quick bench

@pytest.mark.slow
def test_quick_bench_writes_every_key(quick_bench):
    doc = quick_bench["doc"]
    assert set(doc) >= {"machine", "runs"}
    runs = doc["runs"]
    assert [(r["model"], r["pairs"]) for r in runs] == [("default", 30), ("bert-tiny-random", 30)]
    shapes = {r["model"]: (r["layers"], r["heads"]) for r in runs}
    assert shapes == {"default": (6, 12), "bert-tiny-random": (2, 4)}
    for r in runs:
        missing = set(bench.RUN_KEYS) - set(r)
        assert not missing, f"{r['model']}: missing {missing}"
        assert isinstance(r["model"], str) and isinstance(r["pairs"], int) and isinstance(r["pages"], int)
        for key in bench.RUN_KEYS[2:]:
            assert isinstance(r[key], (int, float)) and math.isfinite(r[key]) and r[key] >= 0, (key, r[key])
        # the CPU side of the batches is timed apart from, and is part of, the forward+score pass
        assert 0 < r["batch_cpu_s"] < r["paired_forward_score_s"]
        assert r["batch_cpu_share"] == pytest.approx(r["batch_cpu_s"] / r["paired_forward_score_s"])
        assert r["machine"]["device"] == r["device"] == "cpu" and r["machine"]["gpu"] is None
        assert r["machine"]["cpus"] >= 1 and r["batch_size"] >= 1
        assert r["pages"] > 0 and r["site_mb"] > 0 and r["peak_rss_mb"] > 0 and r["bertviz_bytes_per_pair"] > 0
        # derived columns agree with what they are derived from
        assert r["atlas_s_per_pair"] == pytest.approx(r["total_s"] / r["pairs"])
        assert r["pairs_per_s"] == pytest.approx(r["pairs"] / r["total_s"])
        assert r["atlas_bytes_per_pair"] == pytest.approx(r["site_mb"] * 1e6 / r["pairs"])
        assert r["forward_score_ratio"] == pytest.approx(r["forward_score_s"] / r["bare_forward_s"])
        assert r["analysis"] is False  # --quick switches the analyses off
        site = bench.run_folder(quick_bench["work"], r["model"], r["pairs"], False) / "site"
        assert r["site_bytes"] == bench.site_stats(site)["site_bytes"]
    table = quick_bench["stdout"]
    assert "forward+score s" in table and "bert-tiny-random" in table


@pytest.mark.slow
def test_readme_section_renders_from_bench_json(quick_bench, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# Project\n\nSome text.\n", encoding="utf-8")
    args = ["--no-run", "--readme", "--out", str(quick_bench["out"]), "--readme-path", str(readme)]
    assert bench.main(args) == 0
    text = readme.read_text(encoding="utf-8")
    assert text.startswith("# Project\n\nSome text.\n")
    assert text.count(bench.SECTION) == 1 and text.count(bench.START) == 1 and text.count(bench.END) == 1
    assert text.index(bench.SECTION) < text.index(bench.START) < text.index(bench.END)
    body = text[text.index(bench.START):text.index(bench.END)]
    header, rows = bench.table_rows(quick_bench["doc"]["runs"])
    assert "| " + " | ".join(header) + " |" in body
    for row in rows:  # every number comes from bench.json
        assert "| " + " | ".join(row) + " |" in body
    machine = quick_bench["doc"]["runs"][0]["machine"]
    assert f"On {machine['cpus']} CPU cores ({machine['cpu']}), device cpu" in body
    for plan in bench.PLANS.values():  # the plans are listed, with their make targets
        assert f"`make {bench.plan_target(plan)}` (device {plan.device}" in body
    assert bench.main(args) == 0  # idempotent
    assert readme.read_text(encoding="utf-8") == text

    # An existing section is replaced in place; text around it stays.
    stale = text.replace(body, bench.START + "\nold numbers\n") + "\n## After\n\nkept\n"
    readme.write_text(stale, encoding="utf-8")
    assert bench.main(args) == 0
    again = readme.read_text(encoding="utf-8")
    assert "old numbers" not in again and again.endswith("\n## After\n\nkept\n")
    assert again.count(bench.START) == 1 and body in again


@pytest.mark.slow
def test_readme_has_one_table_per_machine(quick_bench, tmp_path):
    """Runs from a GPU machine (its results file) and the CPU runs: each
    table sits under the sentence naming its machine, and holds its rows only."""
    cpu_doc = quick_bench["doc"]
    gpu_runs = [{**r, "device": "cuda:0", "machine": {**r["machine"], "device": "cuda:0", "gpu": "NVIDIA Example"}}
                for r in cpu_doc["runs"][:1]]
    gpu_file = tmp_path / "bench-gpu.json"
    gpu_file.write_text(json.dumps({"machine": cpu_doc["machine"], "runs": gpu_runs}))
    readme = tmp_path / "README.md"
    readme.write_text("# Project\n", encoding="utf-8")
    assert bench.main(["--no-run", "--readme", "--readme-from", f"{quick_bench['out']},{gpu_file}",
                       "--readme-path", str(readme), "--out", str(quick_bench["out"])]) == 0
    body = readme.read_text(encoding="utf-8")
    cpu_at = body.index(f"On {cpu_doc['runs'][0]['machine']['cpus']} CPU cores")
    gpu_at = body.index("On one NVIDIA Example GPU and")
    assert cpu_at < gpu_at
    _, cpu_rows = bench.table_rows(cpu_doc["runs"])
    _, gpu_rows = bench.table_rows(gpu_runs)
    for row in cpu_rows:
        assert cpu_at < body.index("| " + " | ".join(row) + " |") < gpu_at
    for row in gpu_rows:  # the same numbers, under the GPU's sentence (the table after it)
        assert body.rindex("| " + " | ".join(row) + " |") > gpu_at
    assert len(bench.by_machine([cpu_doc, {"runs": gpu_runs}])) == 2


# ---------------------------------------------------------------- site size

@pytest.mark.slow
def test_site_for_300_pairs_is_the_site_for_30_plus_the_corpus_table(tmp_path):
    """Pages per head, layer and pattern do not depend on the corpus size, and
    pair pages only exist for example pairs: ten times the pairs may only grow
    the corpus table (and its share of the search index). Analyses off: they
    add pages of a fixed size but cost minutes of CPU per build."""
    from generator.cli import run_build
    from generator.config import DEFAULT_MODEL

    stats = {}
    for n in (30, 300):
        config = bench.write_bench_project(tmp_path / f"p{n}", bench.bench_corpus(n), DEFAULT_MODEL,
                                           examples_per_head=1, analysis=False)
        run_build(config, progress=False)
        stats[n] = bench.site_stats(tmp_path / f"p{n}" / "site")
    small, big = stats[30], stats[300]
    # Everything but the example pairs' own pages (and the search index, which
    # indexes them) is the 30-pair site plus the bigger corpus table, within 10%.
    outside = {n: stats[n]["site_bytes"] - _pair_page_bytes(tmp_path / f"p{n}" / "site")
               - stats[n]["search_index_bytes"] for n in (30, 300)}
    expected = outside[30] - small["corpus_page_bytes"] + big["corpus_page_bytes"]
    assert outside[300] <= 1.10 * expected, (
        f"site for 300 pairs without pair pages: {outside[300]:,} bytes; for 30 pairs plus the bigger corpus "
        f"table: {expected:,} bytes")
    assert big["pages"] - big["pair_pages"] == small["pages"] - small["pair_pages"]  # same non-pair pages
    # Pair pages exist only for example pairs: at most layers x heads x examples_per_head,
    # whatever the corpus size (more pairs fill more of these slots, then stop).
    assert small["pair_pages"] <= big["pair_pages"] <= 6 * 12 * 1


def _pair_page_bytes(site) -> int:
    return sum(f.stat().st_size for d in (site / "pairs").glob("p*") if d.is_dir() for f in d.rglob("*") if f.is_file())


# ------------------------------------------------------ vectorised labelling

def test_classify_all_and_consistency_match_the_scalar_rules():
    """classify_all / consistency (vectorised for large corpora) give exactly
    what classify gives row by row, ties and exact thresholds included."""
    from generator.config import PATTERNS
    from generator.patterns import MIXED, classify, classify_all, consistency

    rng = np.random.default_rng(3)
    base = {"next": 0.5, "previous": 0.5, "same_token": 0.3, "other_sentence": 0.25, "same_word": 0.7,
            "delimiter": 0.6, "broad": 0.8}
    for trial in range(60):
        th = base if trial % 2 else {p: float(rng.choice([0.0, 0.25, 0.5, 1.0])) for p in PATTERNS}
        t = np.array([th[p] for p in PATTERNS])
        for dtype in (np.float32, np.float64):
            s = rng.random((64, 7)).astype(dtype)
            s[rng.random(s.shape) < 0.2] = np.nan
            at = rng.random(s.shape) < 0.2
            s[at] = np.broadcast_to(t, s.shape)[at]  # exactly at the threshold
            s[:4] = (1.5 * t).astype(dtype)  # equal ratios everywhere: ties
            want = np.array([classify(row, th) for row in s], dtype=object)
            assert (classify_all(s, th) == want).all()
            assert classify_all(s.reshape(8, 8, 7), th).shape == (8, 8)
            assert consistency(s, MIXED, th) == float(np.mean(want == MIXED))
    assert consistency(np.zeros((0, 7)), MIXED, base) is None


def test_analysis_cost_table_divides_by_the_bounding_setting():
    run = {"model": "default", "pairs": 10000, "layers": 6, "heads": 12, "analysis": True,
           "timings": {"ablation_s": 18.432, "gradient_s": 2.56, "head_map_s": 4.0, "attribution_s": 1.6}}
    settings = {"objective_pairs": 256, "head_map_pairs": 200, "max_pairs": 4, "bootstrap_resamples": 1000}
    rows = {r[0]: r for r in bench.analysis_cost_rows(run, settings)}
    assert rows["head ablation"][3:] == ["18,432", "1.00 ms per pair per head"]
    assert rows["gradient importance"][3:] == ["256", "10.00 ms per pair"]
    assert rows["head map"][3:] == ["200", "20.00 ms per pair"]
    assert "group masking" not in rows  # not timed, not shown
    small = bench.analysis_cost_rows({**run, "pairs": 100}, settings)  # a corpus under the sample size
    assert {r[0]: r[3] for r in small}["head ablation"] == "7,200"
