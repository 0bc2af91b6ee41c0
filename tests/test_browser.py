"""Headless Chromium against the served site: figures render, no errors,
nothing leaves 127.0.0.1, clicks work, hostile text shows as text."""

from __future__ import annotations

import base64
import json

import numpy as np

import pytest

from conftest import PageWatch

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
    cells = page.locator(".atlas-corpus tr:not([hidden]) td.text")
    assert cells.count() == 2
    assert cells.nth(0).inner_text() == "<img src=x onerror=alert(1)>"
    assert cells.nth(1).inner_text() == "</script><script>alert(1)</script>"
    page.locator(".atlas-corpus tr:not([hidden]) td.pair-id a").first.click()
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
    shown = page.locator(".atlas-corpus tbody tr:not([hidden])")
    assert 1 <= shown.count() < 11
    assert all("strawberries" in t.lower() for t in shown.all_inner_texts())
    assert page.locator(".atlas-table-info").inner_text().startswith(f"{shown.count()} of 11 pairs")
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
    # the model view and the head view read one JSON copy of the pair's attention
    assert hv.get_attribute("data-spec") == page.locator(".atlas-modelview").first.get_attribute("data-spec")
    assert page.locator("script[type='application/json'][id$='-spec']").evaluate_all(
        "els => els.filter(e => e.textContent.includes('\"att\"')).length") == 1
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
    # a thumbnail shows that head in the head view of the same pair; the URL keeps the view
    page.locator(".atlas-modelview canvas.mv-thumb").nth(14).click()  # layer 1, head 2
    page.wait_for_function("() => document.querySelector('.atlas-headview select.hv-layer').value === '1'")
    assert hv.locator("select.hv-head").input_value() == "2"
    assert "layer=1" in page.url and "head=2" in page.url
    # its label opens the head's page
    page.locator(".atlas-modelview .mv-cell .label").nth(2).click()
    page.wait_for_url("**/heads/layer-00-head-02/")
    assert_clean(watched, site_url)


def test_view_state_in_the_url_is_restored(watched, site_url):
    watched.open(site_url + "pairs/p0000-vig-store/#layer=3&head=7&token=5&filter=ab&level=words")
    hv = watched.page.locator(".atlas-headview").first
    assert hv.locator("select.hv-layer").input_value() == "3"
    assert hv.locator("select.hv-head").input_value() == "7"
    assert hv.locator("select.hv-filter").input_value() == "ab"
    assert hv.locator(".hv-left.selected").get_attribute("data-i") == "5"
    assert hv.locator(".hv-heatmap").get_attribute("data-level") == "words"
    assert_clean(watched, site_url)


def test_head_view_token_drives_the_query_key_view(watched, site_url):
    watched.open(site_url + "heads/layer-00-head-02/")
    page = watched.page
    page.locator(".atlas-headview .hv-left").nth(4).click()
    page.wait_for_function("() => document.querySelector('.atlas-qkview select.qk-query').value === '4'")
    assert "token=4" in page.url
    assert_clean(watched, site_url)


def test_heatmaps_are_dark_where_attention_is_high(watched, site_url):
    """The pair page's head-view heatmap uses the same white-to-dark-blue scale as every other
    heatmap: its darkest colour sits at its highest value."""
    watched.open(site_url + "pairs/p0000-vig-store/")
    heat = watched.page.locator(".atlas-headview .hv-heatmap").first
    scale = heat.evaluate("el => el.data[0].colorscale")
    lum = lambda c: sum(int(x) for x in c[c.index("(") + 1:-1].split(","))  # noqa: E731
    assert lum(scale[-1][1]) < lum(scale[0][1])  # 1 (high) is darker than 0
    watched.open(site_url + "heads/layer-00-head-02/")
    fig = watched.page.locator(".atlas-example + .atlas-figure").first
    assert fig.evaluate("el => el.data[0].colorscale[0][1]").lower() in ("#f7fbff", "rgb(247,251,255)")
    assert fig.evaluate("el => el.data[0].colorbar.title.text") == "weight"
    assert fig.evaluate("el => el.layout.xaxis.title.text") == "key (attended to)"


def test_no_share_chart_button_and_svg_export(watched, site_url):
    watched.open(site_url + "heads/layer-00-head-02/")
    page = watched.page
    fig = page.locator(".atlas-example + .atlas-figure").first
    fig.hover()
    assert page.locator('.modebar-btn[data-title*="Share"], .modebar-btn[data-title*="Chart Studio"]').count() == 0
    assert page.locator('.modebar-btn[data-title*="Edit in"]').count() == 0
    with page.expect_download() as dl:
        fig.locator('.modebar-btn[data-title="Download as SVG"]').click()
    path = dl.value.path()
    assert dl.value.suggested_filename.endswith(".svg")
    assert open(path, encoding="utf-8").read().lstrip().startswith("<svg")
    with page.expect_download() as dl:
        fig.locator('.modebar-btn[data-title="Download the numbers (JSON)"]').click()
    numbers = json.loads(open(dl.value.path(), encoding="utf-8").read())
    assert numbers[0]["type"] == "heatmap" and len(numbers[0]["z"]) == len(numbers[0]["z"][0])
    with page.expect_download() as dl:
        page.locator(".atlas-headview button.hv-save-svg").click()
    assert open(dl.value.path(), encoding="utf-8").read().startswith("<svg")
    assert_clean(watched, site_url)


def test_nothing_is_clipped_at_1400_px(browser, site_url):
    """No table and no figure is wider than the column it sits in; the one table allowed to be
    wider (all heads, 14 columns) scrolls inside its own box, which fits the column."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    try:
        for path in ["pairs/", "importance/", "heads/layer-05-head-09/", "pairs/p0000-vig-store/", "heads/",
                     "methodology/", "layers/layer-00/"]:
            w = PageWatch(page)
            w.open(site_url + path)
            wide = page.evaluate("""() => {
                const col = document.querySelector('.md-content').getBoundingClientRect();
                return [...document.querySelectorAll('.md-content table, .atlas-figure .main-svg')].map(e => {
                    const box = (e.closest('.atlas-scroll') || e).getBoundingClientRect();
                    const scrolls = !!e.closest('.atlas-scroll');
                    return [e.tagName, Math.round(box.right - col.right), scrolls ? 0 : e.scrollWidth - e.clientWidth];
                }).filter(([t, over, scroll]) => over > 1 || (t === 'TABLE' && scroll > 1)); }""")
            assert wide == [], (path, wide)
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), path
    finally:
        context.close()


def test_dark_mode_is_readable(browser, site_url):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, color_scheme="dark")
    page = context.new_page()
    try:
        w = PageWatch(page)
        w.open(site_url + "heads/layer-00-head-02/")
        assert page.evaluate("document.body.getAttribute('data-md-color-scheme')") == "slate"
        tick = page.locator(".atlas-figure .xtick text").first
        rgb = [int(x) for x in tick.evaluate("e => getComputedStyle(e).fill").strip("rgb() ").split(",")[:3]]
        assert sum(rgb) > 3 * 180, rgb  # light text on the dark page
        # the toggle switches back, and the figures follow
        page.locator("label[title='Switch to light mode']").click()
        page.wait_for_function("() => document.body.getAttribute('data-md-color-scheme') === 'default'")
        page.wait_for_timeout(300)
        rgb = [int(x) for x in tick.evaluate("e => getComputedStyle(e).fill").strip("rgb() ").split(",")[:3]]
        assert sum(rgb) < 3 * 100, rgb
        assert not w.errors, w.errors
    finally:
        context.close()


def test_heads_table_sorts_filters_and_opens_side_by_side(watched, site_url):
    watched.open(site_url + "heads/")
    page = watched.page
    rows = page.locator(".atlas-heads tbody tr:not([hidden])")
    assert rows.count() == 72
    header = page.locator(".atlas-heads th", has_text="previous")
    header.click()  # numbers, largest first
    first = [float(x) for x in page.locator(".atlas-heads tbody tr:not([hidden]) td:nth-child(7)").all_inner_texts()]
    assert first == sorted(first, reverse=True)
    header.click()
    again = [float(x) for x in page.locator(".atlas-heads tbody tr:not([hidden]) td:nth-child(7)").all_inner_texts()]
    assert again == sorted(again)
    page.locator(".atlas-heads input[type=search]").fill("delimiter")
    shown = page.locator(".atlas-heads tbody tr:not([hidden])").all_inner_texts()
    assert shown and all("delimiter" in row.lower() for row in shown) and rows.count() < 72
    page.locator(".atlas-heads input[type=search]").fill("")
    page.locator(".atlas-heads input.atlas-tick[value='0-2']").check()
    page.locator(".atlas-heads input.atlas-tick[value='3-7']").check()
    page.locator(".atlas-compare-link").click()
    page.wait_for_url("**/heads/compare/#h=*")
    watched.open(page.url)
    view = page.locator(".atlas-compareview")
    assert view.get_attribute("data-heads") == "2"
    assert page.locator(".atlas-compare-grid .cmp-col").count() == 2
    assert page.locator(".atlas-compare-grid .js-plotly-plot").count() == 4
    assert "layer 3, head 7" in page.locator(".atlas-compare-grid").inner_text()
    assert_clean(watched, site_url)


def test_not_found_page_works_under_a_subpath(watched, subpath_url):
    """GitHub Pages serves 404.html at any missing URL of a project site."""
    page = watched.page
    html = page.context.request.get(subpath_url + "404.html").text()
    page.route("**/repo/no/such/page/", lambda route: route.fulfill(status=404, body=html, content_type="text/html"))
    page.goto(subpath_url + "no/such/page/", wait_until="load")
    css = page.evaluate("[...document.styleSheets].map(s => s.href).filter(Boolean)")
    assert css and all("/repo/assets/" in h for h in css), css
    assert page.evaluate("getComputedStyle(document.querySelector('.md-header')).position") != "static"
    assert page.locator("a.md-header__button.md-logo").get_attribute("href") in (".", "./")
    assert page.evaluate("new URL(document.querySelector('a.md-header__button.md-logo').href).pathname") == "/repo/"
    # the one expected error: the browser logs the 404 status of the page itself
    assert [e for e in watched.errors if "status of 404" not in e] == [], watched.errors


def test_importance_page_renders(watched, site_url):
    watched.open(site_url + "importance/")
    page = watched.page
    assert page.locator(".atlas-figure.js-plotly-plot").count() == page.locator(".atlas-figure").count() >= 5
    assert_clean(watched, site_url)
