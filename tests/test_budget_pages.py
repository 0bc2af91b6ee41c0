"""The attention budget on the pages (issue 10): every head page opens with the
head's sentence and shows its raw and value-weighted budget; sink heads carry
a note; the layer page has one budget bar per head; the mixed page groups its
heads by leading budget category; the home grid's hover carries the budget.

Checked on a real built site (the session's ``built_site``) and on the
view-models of the same data read back from its cache."""

from __future__ import annotations

import base64
import html
import json
import re
import shutil

import numpy as np
import pytest

from generator import value_norms
from generator.budget import CATEGORIES, CATEGORY_NAMES
from generator.config import load_config, load_corpus
from generator.describe import percent
from generator.links import head_doc, layer_doc, pattern_doc
from generator.pages.common import BUDGET_MARK, SiteContext, budget_text, leading_category
from generator.pages.head import head_page
from generator.pages.home import home_page
from generator.pages.layer import layer_page
from generator.pages.pattern import pattern_page
from generator.pipeline import compute
from generator.registry import MIXED

SPEC = re.compile(r'<script type="application/json" id="([^"]+)-spec">(.*?)</script>', re.S)


def _array(value) -> np.ndarray:
    """A Plotly JSON array: a list, or a typed array ``{"dtype", "bdata"}``."""
    if isinstance(value, dict):
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
    return np.asarray(value, dtype=np.float64)


def _specs(markup: str) -> list[dict]:
    return [json.loads(m.group(2)) for m in SPEC.finditer(str(markup))]


def _budget_traces(spec: dict) -> list[dict]:
    """The stacked-bar traces of a budget figure (one per category)."""
    return [t for t in spec["figure"]["data"] if t.get("type") == "bar" and t.get("orientation") == "h"]


def _head_html(built_site, layer: int, head: int) -> str:
    path = built_site["site"] / "heads" / f"layer-{layer:02d}-head-{head:02d}" / "index.html"
    return path.read_text(encoding="utf-8")


def test_every_head_page_opens_with_its_sentence_then_its_budget(built_site, ctx):
    data = ctx.data
    for layer in range(data.layers):
        for head in range(data.n_heads):
            h = data.head(layer, head)
            page = _head_html(built_site, layer, head)
            body = page[page.index("<h1"):]
            body = body[body.index("</h1>") + 5:]
            first = re.search(r"<(\w+)[^>]*>(.*?)</\1>", body, re.S)
            assert 'class="atlas-description"' in first.group(0), (layer, head)
            assert html.unescape(first.group(2)) == h.description and h.description, (layer, head)
            assert not h.description.startswith("nearest")
            # the first figure of the page is the budget: two rows, raw then value-weighted, summing to 1
            spec = json.loads(SPEC.search(page).group(2))
            traces = _budget_traces(spec)
            assert [t["name"] for t in traces] == [c.title for c in CATEGORIES]
            assert all(t["y"] == ["raw attention", "value-weighted"] for t in traces)
            shares = np.stack([_array(t["x"]) for t in traces], axis=1)  # [2, 11]
            np.testing.assert_allclose(shares[0], data.budget[layer, head], atol=1e-6)
            np.testing.assert_allclose(shares[1], data.value_budget[layer, head], atol=1e-6)
            np.testing.assert_allclose(shares.sum(1), [1.0, 1.0], atol=1e-4)


def test_head_page_budget_table_and_spread(ctx):
    data = ctx.data
    layer, head = data.layers - 1, 0
    vm = head_page(ctx, head_doc(layer, head), layer, head)
    rows = {r.name: r for r in vm.budget.rows}
    assert set(rows) == set(CATEGORY_NAMES)
    for k, name in enumerate(CATEGORY_NAMES):
        assert rows[name].raw == pytest.approx(data.budget[layer, head, k])
        assert rows[name].weighted == pytest.approx(data.value_budget[layer, head, k])
        assert rows[name].lead_raw == pytest.approx(data.budget_lead[layer, head, k])
        assert rows[name].lead_weighted == pytest.approx(data.value_budget_lead[layer, head, k])
    assert [r.raw for r in vm.budget.rows] == sorted((r.raw for r in vm.budget.rows), reverse=True)
    top = int(np.argmax(data.budget_lead[layer, head]))
    assert f"{CATEGORIES[top].title} on {percent(float(data.budget_lead[layer, head, top]))}" in vm.budget.spread
    assert f"{len(data.pairs)} pairs" in vm.budget.spread


def test_sink_heads_and_only_they_carry_the_note(ctx, monkeypatch):
    data = ctx.data
    cls_sep = [CATEGORY_NAMES.index("cls"), CATEGORY_NAMES.index("sep")]
    raw = data.budget[..., cls_sep].sum(-1)
    kept = data.value_budget[..., cls_sep].sum(-1) / raw
    # make sure the small corpus has a sink: set the thresholds at the head with the largest raw share
    layer, head = np.unravel_index(int(np.argmax(raw)), raw.shape)
    if (layer, head) not in data.attention_sinks:
        monkeypatch.setattr(value_norms, "SINK_RAW_MIN", float(raw[layer, head]))
        monkeypatch.setattr(value_norms, "SINK_KEEP_MAX", float(kept[layer, head]) + 1e-9)
    sinks = data.attention_sinks
    assert (layer, head) in sinks
    vm = head_page(ctx, head_doc(layer, head), layer, head)
    weighted = float(data.value_budget[layer, head, cls_sep].sum())
    assert vm.budget.sink is not None
    assert f"{percent(float(raw[layer, head]))} of this head's attention goes to [CLS] and [SEP]" in vm.budget.sink
    assert f"only {percent(weighted)} once" in vm.budget.sink
    assert value_norms.SINK_RULE in vm.budget.sink
    other = next((l, h) for l in range(data.layers) for h in range(data.n_heads) if (l, h) not in sinks)
    assert head_page(ctx, head_doc(*other), *other).budget.sink is None


def test_sink_note_is_on_the_built_page(built_site, ctx):
    data = ctx.data
    for layer in range(data.layers):
        for head in range(data.n_heads):
            page = _head_html(built_site, layer, head)
            assert ("atlas-sink" in page) == ((layer, head) in data.attention_sinks), (layer, head)


def test_head_importance_reads_the_analysis(ctx):
    data = ctx.data
    an = data.analysis
    order = an.importance_order()
    for layer, head in [order[0], order[-1], (0, 0)]:
        imp = head_page(ctx, head_doc(layer, head), layer, head).importance
        assert imp.rank == order.index((layer, head)) + 1 and imp.heads_total == len(order)
        overlaps = bool(an.loss_change_overlaps_zero[layer, head])
        assert imp.loss_overlaps_zero == overlaps
        assert ("not distinguishable from zero" in imp.loss_text) == overlaps
        _assert_shown(imp.loss_text, [an.loss_change[layer, head], *an.loss_change_ci[layer, head]])
        _assert_shown(imp.effect_text, [an.ablation_effect[layer, head], *an.ablation_effect_ci[layer, head]])
        _assert_shown(imp.gradient_text, [an.gradient_raw[layer, head]])
        assert f"{100 * an.bootstrap_level:.0f}% interval" in imp.loss_text
        assert imp.input == an.inputs["importance"]["input"]


NUMBER = re.compile(r"[+-]?\d+\.(\d+)")


def _assert_shown(text: str, values: list[float]) -> None:
    """The numbers written in ``text`` (value, then interval) are ``values`` to the decimals written, and
    the largest keeps at least three significant digits."""
    found = NUMBER.findall(text)
    shown = [float(m.group(0)) for m in NUMBER.finditer(text)]
    assert len(shown) >= len(values), text
    for got, want, decimals in zip(shown, values, found):
        assert abs(got - float(want)) <= 0.5 * 10 ** -len(decimals) + 1e-12, (text, values)
    largest = max(abs(float(v)) for v in values)
    assert largest == 0 or largest * 10 ** len(found[0]) >= 100, text


def test_neurons_say_how_dimensions_are_ranked(built_site, ctx):
    data = ctx.data
    for layer in range(data.layers):
        for head in range(data.n_heads):
            vm = head_page(ctx, head_doc(layer, head), layer, head)
            if vm.neurons is not None:
                values = [v for _, v, _ in vm.neurons.rows]
                assert values == sorted(values, reverse=True)
                page = _head_html(built_site, layer, head)
                assert "row-centred contribution" in page and "only by what moves the softmax" in page
                return
    pytest.fail("no head page has a neurons section")


def test_layer_page_has_one_budget_bar_per_head(built_site, ctx):
    data = ctx.data
    for layer in (0, data.layers - 1):
        vm = layer_page(ctx, layer_doc(layer), layer)
        traces = _budget_traces(_specs(vm.budget)[0])
        assert [t["name"] for t in traces] == [c.title for c in CATEGORIES]
        assert all(t["y"] == [f"head {h}" for h in range(data.n_heads)] for t in traces)
        shares = np.stack([_array(t["x"]) for t in traces], axis=1)  # [heads, 11]
        np.testing.assert_allclose(shares, data.budget[layer], atol=1e-6)
        assert [c.description for c in vm.cards] == [data.head(layer, h).description for h in range(data.n_heads)]
    page = (built_site["site"] / "layers" / "layer-00" / "index.html").read_text(encoding="utf-8")
    for h in range(data.n_heads):
        assert html.escape(data.head(0, h).description, quote=False) in page


def test_mixed_page_groups_add_up(built_site, ctx):
    data = ctx.data
    mixed = [h for h in data.heads if h.label == MIXED]
    vm = pattern_page(ctx, pattern_doc(MIXED), MIXED)
    assert sum(len(g.cards) for g in vm.groups) == len(mixed) == len(vm.cards)
    sizes = [len(g.cards) for g in vm.groups]
    assert sizes == sorted(sizes, reverse=True)
    by_title = {f"Layer {h.layer}, head {h.head}": h for h in mixed}
    seen = set()
    for g in vm.groups:
        for card in g.cards:
            h = by_title[card.title]
            assert leading_category(h.budget) == g.category and card.description == h.description
            seen.add(card.title)
    assert seen == set(by_title)
    if vm.groups:
        page = (built_site["site"] / "patterns" / "mixed" / "index.html").read_text(encoding="utf-8")
        for g in vm.groups:
            assert f"{html.escape(g.title, quote=False)}: {len(g.cards)} head" in page
            assert f'href="#mixed-{g.category}"' in page and f'id="mixed-{g.category}"' in page


def test_home_grid_hover_carries_the_budget_and_the_mark(ctx):
    data = ctx.data
    vm = home_page(ctx, "index.md")
    trace = _specs(vm.grid)[0]["figure"]["data"][0]
    for layer in range(data.layers):
        for head in range(data.n_heads):
            h = data.head(layer, head)
            hover = trace["customdata"][layer][head]
            assert "budget: " + html.escape(budget_text(h.budget)) in hover
            assert html.escape(h.description) in hover.replace("<br>", " ")
            cell = trace["text"][layer][head]
            if h.label == MIXED:
                assert cell.endswith(" <i>" + html.escape(BUDGET_MARK[leading_category(h.budget)]) + "</i>")
            else:
                assert "<i>" not in cell
    marks = {BUDGET_MARK[leading_category(h.budget)] for h in data.heads if h.label == MIXED}
    for mark in marks:
        assert f"{mark} = " in vm.grid_marks
