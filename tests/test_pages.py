"""Page view-models, tested without running mkdocs: every number a page shows
comes from the computed data, and every pattern fact from the registry."""

from __future__ import annotations

import re
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from generator import figures
from generator.config import Thresholds, load_config, load_corpus
from generator.links import head_doc, layer_doc, pattern_doc, rel
from generator.pages import navigation, site_pages
from generator.pages.common import SiteContext, num, pct
from generator.pages.corpus import corpus_page
from generator.pages.head import head_page
from generator.pages.home import home_page
from generator.pages.importance import importance_order, importance_page
from generator.pages.layer import layer_page
from generator.pages.methodology import methodology_page
from generator.pages.pair import pair_page
from generator.pages.pattern import pattern_page
from generator.patterns import classify
from generator.pipeline import compute
from generator.registry import LABEL_INFO, LABELS, MIXED, PATTERNS, REGISTRY


def test_registry_is_the_one_source_of_pattern_facts():
    assert PATTERNS == tuple(p.name for p in REGISTRY) and LABELS == (*PATTERNS, MIXED)
    defaults = Thresholds()
    for p in REGISTRY:
        assert getattr(defaults, p.name) == p.threshold  # config defaults
        assert figures.PATTERN_COLORS[p.name] == p.color and figures.PATTERN_TITLES[p.name] == p.title
        assert p.text and p.formula and p.source and p.threshold_reason
    assert Thresholds.model_fields["same_word"].description.startswith("Other pieces of the same word")


def test_generated_css_has_every_label_colour(built_site):
    css = (built_site["site"] / "assets" / "atlas.css").read_text(encoding="utf-8")
    for name, info in LABEL_INFO.items():
        rule = re.search(r"\.label-" + name + r" \{ ([^}]*)\}", css)
        assert rule, name
        assert f"background: {info.color};" in rule.group(1)
        assert ("color: #fff" in rule.group(1)) == info.light_text


def test_formatting():
    assert num(None) == num(float("nan")) == num(np.float32("nan")) == "n/a"
    assert num(0.12345, 3) == "0.123" and pct(0.426) == "43%" and pct(None) == "n/a"


def test_links_are_relative():
    assert rel(head_doc(1, 2), layer_doc(1)) == "../../layers/layer-01/"
    assert rel("index.md", pattern_doc("same_word")) == "patterns/same-word/"
    assert rel(head_doc(0, 0), "data/heads.json") == "../../data/heads.json"


def test_home_numbers(ctx):
    data = ctx.data
    vm = home_page(ctx, "index.md")
    labels = [h.label for h in data.heads]
    assert vm.heads_total == len(labels) == data.layers * data.n_heads
    assert vm.clear_heads == sum(1 for x in labels if x != MIXED)
    assert vm.pairs == len(data.pairs) and vm.tokens == sum(lay.n for lay in data.layouts)
    assert {r.name: r.heads for r in vm.pattern_rows} == {name: labels.count(name) for name in LABELS}
    assert vm.head_map is not None and vm.head_map_pairs == data.analysis.head_map_pairs
    assert vm.grid.count('class="atlas-figure') == vm.head_map.count('class="atlas-figure') == 1


def test_head_page_numbers(ctx):
    data = ctx.data
    for layer, head in [(0, 0), (data.layers - 1, data.n_heads - 1)]:
        h = data.head(layer, head)
        vm = head_page(ctx, head_doc(layer, head), layer, head)
        assert vm.label == h.label and vm.consistency == h.consistency
        assert [r.score for r in vm.score_rows] == [h.scores[p] for p in PATTERNS]
        for k, row in enumerate(vm.score_rows):
            assert row.defined == data.sums.count[layer, head, k]
            if row.score is not None:
                assert row.ratio == f"{row.score / ctx.thresholds[row.pattern]:.2f}"
        assert [e.pair.index for e in vm.examples] == h.examples
        column = PATTERNS.index(h.example_pattern)
        assert [e.score for e in vm.examples] == pytest.approx(
            [float(data.pair_scores[i, layer, head, column]) for i in h.examples])
        assert (vm.prev is None) == (layer == head == 0)
        assert (vm.next is None) == (layer == data.layers - 1 and head == data.n_heads - 1)
        assert vm.importance.rank == data.analysis.importance_order().index((layer, head)) + 1
        assert vm.description == h.description and vm.budget is not None


def test_pattern_and_layer_pages(ctx):
    data = ctx.data
    for pattern in LABELS:
        vm = pattern_page(ctx, pattern_doc(pattern), pattern)
        assert len(vm.cards) == sum(1 for h in data.heads if h.label == pattern)
        if pattern != MIXED:
            scores = [r.score for r in vm.top]
            assert scores == sorted(scores, reverse=True) and len(vm.top) <= 10
            best = max(h.scores[pattern] for h in data.heads if h.scores[pattern] is not None)
            assert scores[0] == best
    vm = layer_page(ctx, layer_doc(0), 0)
    assert [r.label for r in vm.rows] == [data.head(0, h).label for h in range(data.n_heads)]
    assert sum(c for _, c in vm.label_counts) == data.n_heads


def test_pair_page_labels_each_head_on_that_pair(ctx):
    data = ctx.data
    index = next(iter(ctx.pair_docs))
    vm = pair_page(ctx, ctx.pair_docs[index], index)
    expected = Counter(classify(data.pair_scores[index][l, h], ctx.thresholds)
                       for l in range(data.layers) for h in range(data.n_heads))
    assert dict(vm.label_counts) == dict(expected)
    assert vm.n == data.layouts[index].n == len(vm.tokens)
    assert {u.link.text for u in vm.used_by} == {f"layer {h.layer}, head {h.head}" for h in data.heads
                                                 if index in h.examples}


def test_corpus_importance_and_methodology(ctx):
    data = ctx.data
    vm = corpus_page(ctx, "pairs/index.md")
    assert vm.pairs == len(data.pairs)
    imp = importance_page(ctx, "importance.md")
    first = imp.ablation.ranked[0]
    an = data.analysis
    if an.metric_name == "mean_similarity":  # no better direction: the largest ablation effect first
        assert float(first.ablation_effect.value) == pytest.approx(float(np.nanmax(an.ablation_effect)), abs=1e-4)
    else:  # a metric that should be high: the largest drop first
        assert float(first.metric_change.value) == pytest.approx(float(np.nanmin(an.metric_change)), abs=1e-4)
    meth = methodology_page(ctx, "methodology.md")
    assert [r.name for r in meth.formulas] == list(PATTERNS)
    assert sum(r.heads for r in meth.thresholds) + meth.mixed.heads == len(data.heads)


def test_every_page_kind_is_listed_once_in_the_navigation(ctx):
    pages = site_pages(ctx)
    docs = [p.doc for p in pages]
    assert len(docs) == len(set(docs))
    nav = navigation(pages, ctx.data.layers, ctx.data.n_heads)
    flat = repr(nav)
    for p in pages:
        if not p.doc.startswith("pairs/p"):
            assert p.doc in flat, p.doc


def test_importance_view_model_counts_and_orders_from_the_results(ctx):
    """The page's counts and order are the results' own: the ranked heads are
    ``AnalysisResults.importance_order()``, and "N of 72 heads" counts the
    intervals that exclude zero."""
    from generator.pages.importance import excluding_zero

    an = ctx.data.analysis
    vm = importance_page(ctx, "importance.md", top_k=5)
    assert [(r.layer, r.head) for r in vm.ablation.ranked] == an.importance_order()[:5]
    ci = an.loss_change_ci
    literal = sum(1 for l in range(ci.shape[0]) for h in range(ci.shape[1])
                  if ci[l, h, 0] > 0 or ci[l, h, 1] < 0)
    assert vm.ablation.loss_excluding_zero == excluding_zero(ci) == literal
    assert vm.ablation.loss_helps + vm.ablation.loss_hurts == literal
    assert int(np.sum(~an.loss_change_overlaps_zero)) == literal
    assert vm.ablation.excluding_sentence.startswith(f"{literal} of {ctx.n_heads_total} heads")
    assert len(vm.skipped) == len(an.skipped)
    assert {r.reason for r in vm.inputs} == {v["reason"] for v in an.inputs.values()}
