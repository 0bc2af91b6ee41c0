"""Headless Chromium against the served site: figures render, no errors,
nothing leaves 127.0.0.1, clicks work, hostile text shows as text."""

from __future__ import annotations

import base64
import json

import numpy as np

import pytest

pytestmark = pytest.mark.browser

PAGES = ["", "layers/layer-00/", "heads/layer-00-head-02/", "patterns/delimiter/", "methodology/", "pairs/"]


def assert_clean(w, base: str) -> None:
    assert not w.errors, w.errors
    assert not w.failed, f"failed requests: {w.failed}"
    outside = [u for u in w.requests if not u.startswith("http://127.0.0.1:")]
    assert not outside, f"requests left 127.0.0.1: {outside}"


@pytest.mark.parametrize("path", PAGES)
def test_page_renders_every_figure(watched, site_url, path):
    watched.open(site_url + path)
    page = watched.page
    expected = page.locator(".atlas-figure").count()
    assert page.locator(".atlas-figure.js-plotly-plot").count() == expected
    if expected:
        assert page.locator(".atlas-figure .main-svg").count() >= expected
    # the query/key view draws two Plotly figures of its own, the pair head view one
    views = 2 * page.locator(".atlas-qkview").count() + page.locator(".atlas-headview .hv-heatmap").count()
    assert page.locator(".js-plotly-plot").count() == expected + views
    assert_clean(watched, site_url)


def test_layer_page_has_a_thumbnail_per_head(watched, site_url):
    watched.open(site_url + "layers/layer-00/")
    assert watched.page.locator(".atlas-card .js-plotly-plot").count() == 12


def test_grid_click_opens_head_page(watched, site_url):
    watched.open(site_url)
    drag = watched.page.locator(".atlas-figure").first.locator(".nsewdrag").first
    box = drag.bounding_box()
    # layer 0 (top row), head 2 (third column) of the 6 x 12 grid
    watched.page.mouse.click(box["x"] + box["width"] * 2.5 / 12, box["y"] + box["height"] * 0.5 / 6)
    watched.page.wait_for_url("**/heads/layer-00-head-02/")
    assert "Layer 0, head 2" in watched.page.locator("h1").inner_text()
    assert_clean(watched, site_url)


def test_hover_shows_tokens(watched, site_url):
    watched.open(site_url + "heads/layer-00-head-02/")
    fig = watched.page.locator(".atlas-example + .atlas-figure").first
    drag = fig.locator(".nsewdrag").first
    drag.scroll_into_view_if_needed()
    box = drag.bounding_box()
    watched.page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.3)
    watched.page.mouse.move(box["x"] + box["width"] * 0.31, box["y"] + box["height"] * 0.3)
    label = watched.page.locator(".hoverlayer .hovertext").first
    label.wait_for(timeout=5000)
    assert "\u2192" in label.text_content()


def test_hostile_text_is_shown_literally(watched, site_url):
    watched.open(site_url + "pairs/")
    page = watched.page
    page.fill(".atlas-corpus input[type=search]", "onerror")
    cells = page.locator(".atlas-corpus td.text")
    assert cells.count() == 2
    assert cells.nth(0).inner_text() == "<img src=x onerror=alert(1)>"
    assert cells.nth(1).inner_text() == "</script><script>alert(1)</script>"
    page.locator(".atlas-corpus td.pair-id a").first.click()
    page.wait_for_load_state("load")
    texts = page.locator(".atlas-pair .sentence .text").all_inner_texts()
    assert texts[:2] == ["<img src=x onerror=alert(1)>", "</script><script>alert(1)</script>"]
    assert page.locator("img[src=x]").count() == 0
    assert_clean(watched, site_url)


def test_corpus_table_paginates_and_filters(watched, site_url):
    watched.open(site_url + "pairs/")
    page = watched.page
    assert page.locator(".atlas-corpus tbody tr").count() == 11
    assert "11 of 11 pairs" in page.locator(".atlas-table-info").inner_text()
    page.fill(".atlas-corpus input[type=search]", "strawberries")
    assert page.locator(".atlas-corpus tbody tr").count() >= 1
    assert_clean(watched, site_url)


def test_subpath(watched, subpath_url):
    """Served under /repo/ as GitHub Pages does: figures, assets and links still work."""
    for path in ("", "heads/layer-01-head-00/", "pairs/"):
        watched.open(subpath_url + path)
        page = watched.page
        assert page.locator(".atlas-figure.js-plotly-plot").count() == page.locator(".atlas-figure").count()
    links = watched.page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)")
    internal = [u for u in links if u.startswith("http://127.0.0.1")]
    assert internal and all("/repo/" in u for u in internal)
    assert_clean(watched, subpath_url)


def visible_lines(page, root=".atlas-headview") -> int:
    return int(page.locator(root).first.get_attribute("data-visible-lines"))


def test_head_view_selecting_a_token_changes_what_is_shown(watched, site_url):
    watched.open(site_url + "heads/layer-00-head-02/")
    page = watched.page
    view = page.locator(".atlas-headview").first
    assert view.locator("svg.hv-svg").count() == 1
    all_lines = visible_lines(page)
    assert all_lines > 5
    token = view.locator("text.hv-left").nth(3)
    token.click()  # pins token 3
    pinned = visible_lines(page)
    assert 0 < pinned < all_lines
    weights = [w for w in view.locator("text.hv-weight").all_text_contents() if w]
    assert len(weights) == view.locator("text.hv-right").count()
    assert max(float(w) for w in weights) > 0.9  # a previous-token head: one line carries ~all weight
    assert "position 3" in view.locator(".hv-info").inner_text()
    view.locator("select.hv-filter").select_option("ba")
    assert visible_lines(page) == 0  # token 3 is in sentence A: no B->A line starts there
    token.click()  # release
    assert visible_lines(page) < all_lines  # B->A lines only
    view.locator("select.hv-filter").select_option("all")
    assert visible_lines(page) == all_lines
    assert_clean(watched, site_url)


def test_query_key_view_reproduces_attention(watched, site_url):
    watched.open(site_url + "heads/layer-01-head-11/")
    page = watched.page
    view = page.locator(".atlas-qkview").first
    assert view.locator(".js-plotly-plot").count() == 2
    assert float(view.get_attribute("data-max-error")) < 1e-5
    first = view.locator(".qk-dots .main-svg").first.inner_html()
    view.locator("select.qk-query").select_option("1")
    assert view.locator(".qk-dots .main-svg").first.inner_html() != first
    assert float(view.get_attribute("data-max-error")) < 1e-5
    assert page.locator("article h3", has_text="The neurons that carry").count() == 1
    assert page.locator("table.atlas-neurons tbody tr").count() == 5
    assert_clean(watched, site_url)


def test_pair_page_model_view_and_word_level(watched, site_url):
    watched.open(site_url + "pairs/p0000-vig-store/")
    page = watched.page
    assert page.locator(".atlas-modelview canvas.mv-thumb").count() == 72
    assert page.locator(".atlas-modelview .mv-cell .label").count() == 72
    hv = page.locator(".atlas-headview").first
    heat = hv.locator(".hv-heatmap")
    assert heat.get_attribute("data-level") == "tokens"
    ticks_tokens = heat.locator(".xtick").count()
    hv.locator("button.hv-level[data-level=words]").click()
    assert heat.get_attribute("data-level") == "words"
    assert heat.locator(".xtick").count() == ticks_tokens - 1  # straw ##berries -> strawberries
    hv.locator("select.hv-layer").select_option("3")
    hv.locator("select.hv-head").select_option("7")
    assert "layer 3, head 7" in heat.inner_text()
    # the word-level numbers (Clark et al. 2019, §4.1): attention to a word is the sum over its
    # pieces, attention from it the mean; recomputed here from the page's own data
    spec = json.loads(page.evaluate("id => document.getElementById(id).textContent", hv.get_attribute("data-spec")))
    n = spec["n"]
    att = np.frombuffer(base64.b64decode(spec["att"]), dtype=np.uint8).reshape(spec["layers"], spec["heads"], n, n)
    m = att[3, 7].astype(np.float64) / 255
    onehot = np.zeros((n, len(spec["group_labels"])))
    onehot[np.arange(n), spec["groups"]] = 1.0
    expected = (onehot.T @ (m @ onehot)) / onehot.sum(0)[:, None]
    shown = np.array(page.evaluate("el => el.data[0].z", heat.element_handle()))
    np.testing.assert_allclose(shown, expected, atol=1e-9)
    page.locator(".atlas-modelview .mv-cell").nth(2).click()
    page.wait_for_url("**/heads/layer-00-head-02/")
    assert_clean(watched, site_url)


def test_importance_page_renders(watched, site_url):
    watched.open(site_url + "importance/")
    page = watched.page
    assert page.locator(".atlas-figure.js-plotly-plot").count() == page.locator(".atlas-figure").count() >= 5
    assert_clean(watched, site_url)
