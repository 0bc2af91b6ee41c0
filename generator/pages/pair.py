"""A page per pair: its sentences and tokens, the model view and head view
of all heads, token attribution, perturbed masking, and every head's label on
this pair."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from markupsafe import Markup

from generator import figures, views
from generator.links import head_doc, rel
from generator.pages.common import Figures, Link, PairText, SiteContext
from generator.pages.compare import PairCompareSection, pair_compare_section


@dataclass(frozen=True)
class Token:
    position: int
    text: str
    css: str


@dataclass(frozen=True)
class AttributedToken:
    text: str
    style: str
    title: str


@dataclass(frozen=True)
class Attribution:
    n_steps: int
    tokens: list[AttributedToken]
    total: float
    value: float
    baseline_value: float
    relative_error: str


@dataclass(frozen=True)
class Impact:
    layer: int
    passes: int
    impact: Markup
    mean_attention: Markup


@dataclass(frozen=True)
class HeadUsingPair:
    link: Link
    label: str


@dataclass(frozen=True)
class PairPage:
    index: int
    pair: PairText
    note: str | None
    gold_label: str | None
    tags: list[str]
    truncated: bool
    max_length: int
    n: int
    tokens: list[Token]
    views_shown: bool
    view_max_tokens: int
    heads_total: int
    model_view: Markup | None
    head_view: Markup | None
    attribution: Attribution | None
    impact: Impact | None
    grid: Markup
    label_counts: list[tuple[str, int]]
    used_by: list[HeadUsingPair]
    compare: PairCompareSection | None = None


def attribution_style(attributions: np.ndarray, i: int) -> str:
    """CSS background of token ``i``: red raises the objective, blue lowers it,
    opacity = |attribution| / max |attribution| over the pair."""
    m = float(np.max(np.abs(attributions))) or 1.0
    v = float(attributions[i]) / m
    color = "214, 39, 40" if v >= 0 else "31, 95, 168"
    return f"background: rgba({color}, {abs(v):.3f})"


def pair_page(ctx: SiteContext, doc: str, index: int) -> PairPage:
    """The view-model of pair ``index``'s page (figures in page order)."""
    data, fig = ctx.data, Figures(doc)
    pair, layout = data.pairs[index], data.layouts[index]
    tokens = [Token(k, t, "special" if layout.special[k] else f"seg-{layout.segment[k]}")
              for k, t in enumerate(layout.tokens)]
    labels = ctx.pair_labels(index)
    model_view = head_view = None
    views_shown = layout.n <= ctx.view_max_tokens
    if views_shown:
        payload = views.head_view_data(data.showcase.attention[index], layout, head_labels=labels.tolist(),
                                       head_links=ctx.grid_links(doc))
        model_view = fig.view("modelview", payload)
        head_view = fig.view("headview", payload)
    an = data.analysis
    attribution = impact = None
    if an is not None and index in an.attributions:
        at = an.attributions[index]
        values = at["attributions"]
        attribution = Attribution(
            n_steps=at["n_steps"],
            tokens=[AttributedToken(t, attribution_style(values, k), "%.4f" % values[k])
                    for k, t in enumerate(at["tokens"])],
            total=at["total"], value=at["value"], baseline_value=at["baseline_value"],
            relative_error="%.1e" % at["relative_error"])
    if an is not None and index in an.impact:
        m = an.impact[index]
        zmax = float(np.nanmax(m)) if np.isfinite(m).any() else 1.0
        hover = figures.escape_tokens(layout.tokens)
        impact = Impact(
            layer=an.impact_layer, passes=layout.n ** 2,
            impact=fig(figures.attention_heatmap(np.nan_to_num(m), layout.tokens, size=320, zmax=zmax,
                                                 colorscale="Reds"), hover_tokens=hover, how_to_read="impact"),
            mean_attention=fig(figures.attention_heatmap(data.showcase.attention[index].mean(axis=(0, 1)),
                                                         layout.tokens, size=320), hover_tokens=hover,
                               how_to_read="attention"))
    grid = fig(figures.head_grid(labels, data.pair_scores[index]), links=ctx.grid_links(doc), how_to_read="grid")
    used_by = [HeadUsingPair(Link(rel(doc, head_doc(h.layer, h.head)), f"layer {h.layer}, head {h.head}"), h.label)
               for h in data.heads if index in h.examples]
    return PairPage(
        index=index, pair=ctx.pair_text(doc, index, link=False), note=pair.note,
        gold_label=None if pair.label is None else f"{pair.label:g}", tags=list(pair.tags),
        truncated=bool(data.truncated[index]), max_length=ctx.max_length, n=layout.n, tokens=tokens,
        views_shown=views_shown, view_max_tokens=ctx.view_max_tokens, heads_total=ctx.n_heads_total,
        model_view=model_view, head_view=head_view, attribution=attribution, impact=impact, grid=grid,
        label_counts=ctx.count_labels(labels), used_by=used_by, compare=pair_compare_section(ctx, doc, fig, index))
