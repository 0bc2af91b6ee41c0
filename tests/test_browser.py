"""Headless Chromium against the served site: figures render, no errors,
nothing leaves 127.0.0.1, clicks work, hostile text shows as text."""

from __future__ import annotations

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
    assert page.locator(".js-plotly-plot").count() == expected
    if expected:
        assert page.locator(".atlas-figure .main-svg").count() >= expected
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
        assert page.locator(".js-plotly-plot").count() == page.locator(".atlas-figure").count()
    links = watched.page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)")
    internal = [u for u in links if u.startswith("http://127.0.0.1")]
    assert internal and all("/repo/" in u for u in internal)
    assert_clean(watched, subpath_url)
