"""What the Importance and pair pages say about the analyses (issue 11, and
the rollout of issue 10), checked on built sites against the computed data:
the signed chart and its intervals, the "N of 72 heads ... excludes zero"
sentence, the input setting, every skipped analysis with its reason, f(x)
next to the baseline's f(x'), and the rollout's layer slider."""

from __future__ import annotations

import base64
import html
import json
import re
import shutil

import numpy as np
import pytest

from conftest import small_corpus_items, write_project
from generator import figures
from generator.config import load_config, load_corpus
from generator.pages.common import SiteContext
from generator.pipeline import compute
from generator.rollout import rollout

LAYERS, HEADS = 6, 12
SPEC = re.compile(r'<script type="application/json" id="([^"]+)-spec">(.*?)</script>', re.S)


def figure_specs(page: str) -> list[dict]:
    """Every embedded figure's ``{"figure": ..., ...}`` of a page, in page order."""
    return [json.loads(m.group(2)) for m in SPEC.finditer(page) if "figure" in json.loads(m.group(2))]


def array(value) -> np.ndarray:
    """A Plotly JSON array: a list, or a typed array ``{"dtype", "bdata"}`` (base64)."""
    if isinstance(value, dict) and "bdata" in value:
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"])).astype(np.float64)
    return np.asarray(value, dtype=np.float64)


def text_of(page: str) -> str:
    """A page's visible text: inline tags dropped, other tags a space, entities decoded, whitespace collapsed."""
    inline = re.sub(r"</?(?:b|i|em|strong|span|a|code|sub|sup)\b[^>]*>", "", page)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", inline)))


def heads_json(site) -> dict[tuple[int, int], dict]:
    doc = json.loads((site / "data" / "heads.json").read_text(encoding="utf-8"))
    return {(h["layer"], h["head"]): h for h in doc["heads"]}


@pytest.fixture(scope="module")
def labelled_site(tmp_path_factory) -> dict:
    """A small build of labelled pairs (so the metric is Spearman's rho) with
    perturbed masking left on ``auto``: the default model has no masked-LM
    head, so it is skipped; the head map is switched off by a setting."""
    from generator.cli import run_build

    project = tmp_path_factory.mktemp("labelled")
    config = write_project(project, small_corpus_items(8)[:8],
                           analysis={"importance": True, "group_masking": False, "attribution": True,
                                     "attribution_steps": 8, "perturbed_masking": "auto", "head_map": False,
                                     "max_pairs": 1, "bootstrap_resamples": 200})
    run_build(config, progress=False)
    return {"site": project / "site", "config": config}


# ------------------------------------------------------------- figures, unit

def test_signed_intervals_groups_heads_by_their_interval():
    values = np.array([[0.3, -0.2, 0.05], [np.nan, -0.01, 0.0]])
    ci = np.array([[[0.1, 0.5], [-0.4, -0.1], [-0.1, 0.2]], [[np.nan, np.nan], [-0.02, 0.01], [0.0, 0.0]]])
    fig = figures.signed_intervals(values, ci, y_title="dL", positive=("helps", "#00f"), negative=("hurts", "#f80"))
    names = [t.name for t in fig.data]
    assert names == ["helps", "hurts", "interval overlaps 0"]
    assert list(fig.data[0].x) == ["0-0"] and list(fig.data[1].x) == ["0-1"]
    assert list(fig.data[2].x) == ["1-1", "1-2", "0-2"]  # sorted by value, NaN left out
    assert list(fig.layout.xaxis.categoryarray) == ["0-1", "1-1", "1-2", "0-2", "0-0"]
    # error bars reach the interval's ends
    t = fig.data[2]
    np.testing.assert_allclose(np.asarray(t.y) + np.asarray(t.error_y.array), [0.01, 0.0, 0.2], atol=1e-6)
    np.testing.assert_allclose(np.asarray(t.y) - np.asarray(t.error_y.arrayminus), [-0.02, 0.0, -0.1], atol=1e-6)
    links = figures.signed_interval_links(values, ci, lambda l, h: f"{l}/{h}")
    assert links == [["0/0"], ["0/1"], ["1/1", "1/2", "0/2"]]


# ------------------------------------------------------------ importance page

def test_signed_chart_and_intervals_match_heads_json(built_site):
    site = built_site["site"]
    heads = heads_json(site)
    page = (site / "importance" / "index.html").read_text(encoding="utf-8")
    charts = [s for s in figure_specs(page) if any("error_y" in t for t in s["figure"]["data"])]
    assert len(charts) == 2  # the signed loss change, then the corpus metric's change
    for spec, field in zip(charts, ("loss_change", "metric_change")):
        seen = set()
        for trace, links in zip(spec["figure"]["data"], spec["point_links"]):
            y = array(trace["y"])
            high = y + array(trace["error_y"]["array"])
            low = y - array(trace["error_y"]["arrayminus"])
            assert len(links) == len(trace["x"]) == len(y)
            for k, name in enumerate(trace["x"]):
                layer, head = (int(x) for x in name.split("-"))
                imp = heads[(layer, head)]["importance"]
                assert y[k] == pytest.approx(imp[field], abs=1e-6)
                assert [low[k], high[k]] == pytest.approx(imp[field + "_ci"], abs=1e-6)
                overlaps = imp[field + "_ci"][0] <= 0 <= imp[field + "_ci"][1]
                assert overlaps == (trace["name"] == "interval overlaps 0"), (field, name)
                assert links[k].endswith(f"layer-{layer:02d}-head-{head:02d}/")
                seen.add((layer, head))
        assert len(seen) == LAYERS * HEADS


def test_excludes_zero_sentence_matches_the_data(built_site):
    site = built_site["site"]
    heads = heads_json(site)
    text = text_of((site / "importance" / "index.html").read_text(encoding="utf-8"))
    loss = [h["importance"]["loss_change_ci"] for h in heads.values()]
    metric = [h["importance"]["metric_change_ci"] for h in heads.values()]
    n_loss = sum(1 for lo, hi in loss if lo > 0 or hi < 0)
    helps = sum(1 for lo, _ in loss if lo > 0)
    n_metric = sum(1 for lo, hi in metric if lo > 0 or hi < 0)
    assert (f"{n_loss} of {LAYERS * HEADS} heads have a 95% interval of the loss change that excludes zero "
            f"({helps} help, {n_loss - helps} hurt)") in text
    assert f"{n_metric} of {LAYERS * HEADS} heads have a metric-change interval that excludes zero" in text


def test_importance_states_inputs_objective_pairs_and_truncation(built_site):
    text = text_of((built_site["site"] / "importance" / "index.html").read_text(encoding="utf-8"))
    # analysis.input defaults to separate: importance reads each sentence alone, the head map the joint pair
    assert "Head importance reads each sentence alone (analysis.input = separate)" in text
    assert "head importance (masking one head at a time, gradients) each sentence alone" in text
    assert "head map the joint pair [CLS] a [SEP] b [SEP]" in text
    assert "Pairs: all 11 pairs (analysis.objective_pairs = 256 is not reached)" in text
    assert "not up to model.max_length = 64" in text  # the test config's max_length
    # all-MiniLM-L6-v2 is a sentence-transformers checkpoint used at 256 tokens (sentence_bert_config.json)
    assert "up to the model's own limit of 256 tokens" in text
    # Michel et al. like for like, with the rank correlation and the bootstrap cited
    assert "Are Sixteen Heads Really Better than One?" in text and "Efron & Tibshirani 1993" in text
    rho = float(re.search(r"Spearman's ρ between them over all 72 heads: (-?\d\.\d\d)", text).group(1))
    assert -1.0 <= rho <= 1.0
    assert "compares the heads of one layer (one row) only" in text
    assert "It averages over all 11 pairs of the corpus (fewer than analysis.head_map_pairs = 200)" in text


def test_ranked_table_follows_importance_order_with_flags(ctx, built_site):
    an = ctx.data.analysis
    page = (built_site["site"] / "importance" / "index.html").read_text(encoding="utf-8")
    table = page[page.index('class="atlas-ranked"'):]
    table = table[:table.index("</table>")]
    rows = re.findall(r'<tr><td>(\d+)</td><td><a href="[^"]+">layer (\d), head (\d+)</a>(.*?)</tr>', table, re.S)
    assert [(int(l), int(h)) for _, l, h, _ in rows] == an.importance_order()[:10]
    for _, l, h, rest in rows:
        cells = re.findall(r"<td>(.*?)</td>", rest, re.S)
        metric, loss = cells[1], cells[2]
        assert ("overlaps 0" in metric) == bool(an.metric_change_overlaps_zero[int(l), int(h)])
        assert ("overlaps 0" in loss) == bool(an.loss_change_overlaps_zero[int(l), int(h)])
        low, high = an.loss_change_ci[int(l), int(h)]
        assert f"[{low:.4f}, {high:.4f}]" in loss


def test_skipped_analyses_are_named_with_their_reason(labelled_site):
    site = labelled_site["site"]
    text = text_of((site / "importance" / "index.html").read_text(encoding="utf-8"))
    assert "Not run in this build:" in text
    assert ("perturbed masking (pair pages): sentence-transformers/all-MiniLM-L6-v2 has no masked-LM head, so it "
            "was never trained to fill [MASK]") in text
    assert "head map: switched off by a setting (analysis.head_map = false)" in text
    assert "masking groups of heads: switched off by a setting (analysis.group_masking = false)" in text
    # labelled pairs: the metric is Spearman's rho, ranked by how much it drops
    assert "The 10 heads whose masking hurts Spearman's ρ most" in text
    pages = sorted((site / "pairs").glob("p*/index.html"))
    assert pages
    for path in pages:
        t = text_of(path.read_text(encoding="utf-8"))
        assert t.count("Perturbed masking did not run: sentence-transformers/all-MiniLM-L6-v2 has no "
                       "masked-LM head") == 1, path
        assert "Perturbed masking: which word affects which" not in t
    analysed = [p for p in pages if "Which tokens drive the similarity" in p.read_text(encoding="utf-8")]
    assert len(analysed) == 1  # max_pairs: 1
    for path in pages:
        if path not in analysed:
            assert ("Integrated gradients ran on 1 of the pairs: the untruncated ones that most heads use as "
                    "examples (analysis.max_pairs = 1); this pair is not among them."
                    in text_of(path.read_text(encoding="utf-8")))


# ------------------------------------------------------------------ pair pages

def test_pair_page_prints_f_x_next_to_the_baseline(ctx, built_site):
    an = ctx.data.analysis
    assert an.attributions
    for index, at in an.attributions.items():
        page = (built_site["site"] / ctx.pair_docs[index].removesuffix(".md") / "index.html").read_text(
            encoding="utf-8")
        text = text_of(page)
        assert (f"f(x), this pair {at['value']:.4f} f(x′), the baseline {at['baseline_value']:.4f} "
                f"f(x) − f(x′) {at['value'] - at['baseline_value']:+.4f}") in text
        assert html.unescape(at["how_to_read"]) in text
        assert f"relative error {at['relative_error']:.1e}" in text
        assert "Input: each sentence alone" in text


def test_pair_page_perturbed_masking_is_whole_word_with_its_caveat(ctx, built_site):
    an = ctx.data.analysis
    assert an.impact and an.impact_note  # the test model has no masked-LM head; the fixture opts in
    for index in an.impact:
        text = text_of((built_site["site"] / ctx.pair_docs[index].removesuffix(".md") / "index.html").read_text(
            encoding="utf-8"))
        assert f"Caveat: {an.impact_note}" in text
        assert f"every WordPiece of word i is replaced by {an.impact_mask_token}" in text
        assert f"layer-{an.impact_layer} representation" in text
        assert "Perturbed masking did not run" not in text


def test_rollout_has_one_slider_step_per_layer(ctx, built_site):
    data = ctx.data
    for index, doc in list(ctx.pair_docs.items())[:3]:
        page = (built_site["site"] / doc.removesuffix(".md") / "index.html").read_text(encoding="utf-8")
        specs = [s for s in figure_specs(page) if s["figure"]["layout"].get("sliders")]
        assert len(specs) == 1, doc
        steps = specs[0]["figure"]["layout"]["sliders"][0]["steps"]
        assert [s["label"] for s in steps] == [str(l) for l in range(data.layers)]
        expected = rollout(data.showcase.attention[index])
        for layer, step in enumerate(steps):
            np.testing.assert_allclose(np.asarray(step["args"][0]["z"][0]), expected[layer], atol=5e-4 + 1e-9)  # the figure keeps 3 decimals
        assert "0.5 · (the mean attention of its 12 heads) + 0.5 · I" in text_of(page)
        assert "Quantifying Attention Flow in Transformers" in page
