"""End-to-end: a real site from a small real corpus and the packaged model,
checked for what a reader sees (pages, figures, heads.json, escaping)."""

from __future__ import annotations

import filecmp
import json
import re
from pathlib import Path

import pytest

from generator.config import PATTERNS

LAYERS, HEADS = 6, 12


def html_files(site: Path) -> list[Path]:
    return sorted(site.rglob("*.html"))


def test_every_page_exists(built_site):
    site = built_site["site"]
    assert (site / "index.html").is_file()
    assert (site / "methodology" / "index.html").is_file()
    assert (site / "pairs" / "index.html").is_file()
    for layer in range(LAYERS):
        assert (site / "layers" / f"layer-{layer:02d}" / "index.html").is_file()
        for head in range(HEADS):
            assert (site / "heads" / f"layer-{layer:02d}-head-{head:02d}" / "index.html").is_file()
    for pattern in (*PATTERNS, "mixed"):
        assert (site / "patterns" / pattern.replace("_", "-") / "index.html").is_file()
    pair_pages = sorted((site / "pairs").glob("p*/index.html"))
    assert len(pair_pages) == 11  # pair_pages: all, 8 + 1 Chinese + 2 hostile
    assert (site / "assets" / "plotly.min.js").stat().st_size > 3_000_000


def test_heads_json(built_site):
    site = built_site["site"]
    doc = json.loads((site / "data" / "heads.json").read_text(encoding="utf-8"))
    assert doc["model"] == {"name_or_path": "sentence-transformers/all-MiniLM-L6-v2", "layers": 6, "heads": 12}
    assert doc["corpus"] == {"path": "content/corpus.yml", "pairs": 11}
    assert set(doc["thresholds"]) == set(PATTERNS)
    assert len(doc["heads"]) == LAYERS * HEADS
    seen = {(h["layer"], h["head"]) for h in doc["heads"]}
    assert seen == {(l, h) for l in range(LAYERS) for h in range(HEADS)}
    for h in doc["heads"]:
        assert set(h["scores"]) == set(PATTERNS)
        for name, value in h["scores"].items():
            assert value is None or 0.0 <= value <= 1.0, (h, name)
        assert h["pattern"] in (*PATTERNS, "mixed")
        assert h["consistency"] is None or 0.0 <= h["consistency"] <= 1.0
        assert (site / h["page"] / "index.html").is_file()
    l0h2 = next(h for h in doc["heads"] if (h["layer"], h["head"]) == (0, 2))
    assert l0h2["pattern"] == "previous"
    assert l0h2["scores"]["previous"] > 0.95
    assert l0h2["consistency"] == 1.0


def test_head_page_shows_label_scores_and_examples(built_site):
    page = (built_site["site"] / "heads" / "layer-00-head-02" / "index.html").read_text(encoding="utf-8")
    assert "Layer 0, head 2" in page
    assert 'class="label label-previous"' in page
    # scores bar + examples_per_head heatmaps
    assert page.count('class="atlas-figure') >= 1 + 2
    for name in PATTERNS:
        assert f"<td>{name}</td>" in page or f"label-{name}" in page
    assert "heads/layer-00-head-01/" not in page or "../layer-00-head-01/" in page


def test_links_are_relative_and_nav_sorted(built_site):
    page = (built_site["site"] / "layers" / "layer-03" / "index.html").read_text(encoding="utf-8")
    hrefs = re.findall(r'href="([^"]+)"', page)
    assert not [h for h in hrefs if h.startswith("/")], "absolute links break a subpath such as /repo/"
    nav = page[page.index("md-nav--primary"):page.index('class="md-content"')]
    nav_heads = re.findall(r'href="\.\./\.\./heads/layer-03-head-(\d\d)/"', nav)
    assert list(dict.fromkeys(nav_heads)) == [f"{h:02d}" for h in range(HEADS)]


def test_corpus_text_is_escaped_everywhere(built_site):
    raw = ["<img src=x onerror=alert(1)>", "</script><script>alert(1)</script>", "<b>bold?</b>",
           "javascript:alert(1)"]
    for path in html_files(built_site["site"]):
        text = path.read_text(encoding="utf-8")
        for needle in raw[:3]:
            assert needle not in text, f"{needle!r} unescaped in {path}"
        assert 'href="javascript' not in text
    hostile = next(p for p in (built_site["site"] / "pairs").glob("p*-xss-img*/index.html"))
    text = hostile.read_text(encoding="utf-8")
    assert "&lt;img src=x onerror=alert(1)&gt;" in text
    assert "{{ jinja }}" in text and "{% raw %}" in text  # shown literally, not evaluated
    assert "[x](javascript:alert(1))" in text  # not turned into a link


def test_template_change_rerenders_from_cache(built_site, tmp_path):
    """A second build with the same inputs reads every number from the cache
    (no model load) and gives byte-identical pages and data."""
    from generator.cli import run_build

    other = tmp_path / "site2"
    timings = run_build(built_site["config"], site_dir=other, progress=False)
    assert "load_s" not in timings and "forward_score_s" not in timings
    cmp = filecmp.dircmp(built_site["site"], other)
    differing = []

    def walk(c, prefix=""):
        differing.extend(prefix + f for f in c.diff_files + c.left_only + c.right_only)
        for name, sub in c.subdirs.items():
            walk(sub, f"{prefix}{name}/")

    walk(cmp)
    # filecmp's shallow compare trusts equal size + mtime; force a content check
    for path in built_site["site"].rglob("*"):
        if path.is_file():
            twin = other / path.relative_to(built_site["site"])
            if path.read_bytes() != twin.read_bytes():
                differing.append(str(path.relative_to(built_site["site"])))
    assert not differing, f"builds differ: {sorted(set(differing))[:10]}"


def test_importance_page_and_heads_json(built_site):
    """Head masking, gradient importance, group masking and the head map land
    on the pages, and every head's importance in heads.json, each field named
    by its quantity."""
    site = built_site["site"]
    doc = json.loads((site / "data" / "heads.json").read_text(encoding="utf-8"))
    fields = {"objective", "metric", "ablation_effect", "ablation_ci", "loss_change", "loss_change_ci",
              "metric_change", "metric_change_ci", "gradient", "gradient_layer_normalized", "ci_level"}
    for h in doc["heads"]:
        imp = h["importance"]
        assert set(imp) == fields
        assert imp["objective"] == "similarity" and imp["metric"] == "mean_similarity" and imp["ci_level"] == 0.95
        assert imp["ablation_effect"] >= 0.0 and imp["gradient"] >= 0.0
        assert 0.0 <= imp["gradient_layer_normalized"] <= 1.0
        for name in ("ablation", "loss_change", "metric_change"):
            low, high = imp[f"{name}_ci"]
            value = imp["ablation_effect" if name == "ablation" else name]
            assert low <= high
            assert low - 1e-6 <= value <= high + 1e-6 or name == "metric_change", (h["layer"], h["head"], name)
    # Michel et al.'s layer normalisation: each layer's row has unit L2 norm
    for layer in range(LAYERS):
        row = [h["importance"]["gradient_layer_normalized"] for h in doc["heads"] if h["layer"] == layer]
        assert sum(v * v for v in row) == pytest.approx(1.0, abs=1e-4)
    page = (site / "importance" / "index.html").read_text(encoding="utf-8")
    for heading in ("Masking one head at a time", "Ablation and gradient importance, like for like",
                    "Does the head help or hurt? The signed loss change", "The corpus metric",
                    "Gradient importance within a layer", "Masking groups of heads", "Head map"):
        assert heading in page, heading
    # the hostile test pairs carry no label, so the metric is the mean similarity and has no direction
    assert "mean similarity (the pairs have no labels, so no better or worse)" in page
    assert "The 10 heads whose masking moves the loss most" in page
    assert "Without labels the per-pair loss is the similarity itself" in page
    assert "all delimiter heads" in page
    home = (site / "index.html").read_text(encoding="utf-8")
    assert "Head map" in home
    head = (site / "heads" / "layer-00-head-02" / "index.html").read_text(encoding="utf-8")
    assert "Masking this head alone (Michel et al. 2019" in head and "Signed change of the loss:" in head
    assert re.search(r"ranks it\s+\d+\s+of\s+72", re.sub(r"<[^>]+>", " ", head))


def test_pair_pages_show_attribution_and_perturbed_masking(built_site):
    """The two most-shown pairs get integrated gradients (with a small
    completeness error) and the perturbed-masking matrix."""
    pages = sorted((built_site["site"] / "pairs").glob("p*/index.html"))
    with_ig = [p for p in pages if "Which tokens drive the similarity" in p.read_text(encoding="utf-8")]
    with_pm = [p for p in pages if "Perturbed masking: which word affects which" in p.read_text(encoding="utf-8")]
    assert len(with_ig) == 2 and with_ig == with_pm
    text = with_ig[0].read_text(encoding="utf-8")
    error = float(re.search(r"relative error (\d\.\de[+-]\d+)", text).group(1))
    assert error < 0.05
