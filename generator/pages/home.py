"""The home page: the model and corpus in numbers, the layers x heads grid,
the head map, heads per pattern and per layer."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

from markupsafe import Markup

from generator import figures
from generator.links import CORPUS, HEADS_JSON, PAIR_SCORES_CSV, pattern_doc, rel
from generator.budget import CATEGORIES
from generator.pages.importance import head_map_text
from generator.pages.common import BUDGET_MARK, Figures, SiteContext, budget_text, leading_category
from generator.registry import LABEL_INFO, LABELS, MIXED


@dataclass(frozen=True)
class PatternRow:
    name: str
    href: str
    heads: int
    title: str


@dataclass(frozen=True)
class HomePage:
    title: str
    description: str
    layers: int
    heads: int
    heads_total: int
    pairs: int
    tokens: int
    clear_heads: int
    model_name: str
    corpus_name: str
    truncated_count: int
    max_length: int
    grid: Markup
    labels: tuple[str, ...]
    head_map: Markup | None
    head_map_pairs: int
    head_map_sample: str
    label_counts: Markup
    pattern_rows: list[PatternRow]
    layer_counts: Markup
    heads_json_href: str
    with_page: int
    pair_scores_href: str
    corpus_meta: dict[str, str]
    corpus_href: str
    #: which budget category each mark in a ``mixed`` cell stands for ("" when no cell has one).
    grid_marks: str = ""


def grid_hover_budget(ctx: SiteContext, width: int = 60) -> list[list[str]]:
    """Per head, the lines the home grid's hover adds after the scores: the three largest attention-budget
    shares (:mod:`generator.budget`) and the head's description, wrapped at ``width`` characters.

    Returns:
        ``[layers][heads]`` plain text, lines separated by ``\n``; empty strings when no budget was computed.
    """
    data = ctx.data
    out = []
    for layer in range(data.layers):
        row = []
        for head in range(data.n_heads):
            h = data.head(layer, head)
            lines = [f"budget: {budget_text(h.budget)}"] if h.budget else []
            if h.description:
                lines += textwrap.wrap(h.description, width)
            row.append("\n".join(lines))
        out.append(row)
    return out


def grid_marks(ctx: SiteContext) -> list[list[str]]:
    """``[layers][heads]``: for a ``mixed`` head, the few letters (:data:`BUDGET_MARK`) of the budget category
    that takes the largest share of its attention; empty for a labelled head or when no budget was computed."""
    data = ctx.data
    return [[BUDGET_MARK[leading_category(h.budget)] if h.label == MIXED and h.budget else ""
             for h in (data.head(layer, head) for head in range(data.n_heads))] for layer in range(data.layers)]


def grid_mark_legend(marks: list[list[str]]) -> str:
    """One sentence naming the marks that appear in the grid, e.g. "CLS = [CLS], own = own sentence"."""
    shown = {m for row in marks for m in row if m}
    return ", ".join(f"{BUDGET_MARK[c.name]} = {c.title}" for c in CATEGORIES if BUDGET_MARK[c.name] in shown)


def home_page(ctx: SiteContext, doc: str) -> HomePage:
    """The home page's view-model (figures in page order)."""
    data, fig = ctx.data, Figures(doc)
    marks = grid_marks(ctx)
    grid = fig(figures.head_grid(ctx.labels, ctx.head_scores, hover_extra=grid_hover_budget(ctx), marks=marks),
               links=ctx.grid_links(doc), how_to_read="grid")
    head_map = None
    an = data.analysis
    if an is not None and an.head_coords is not None:
        c = an.head_coords.reshape(data.layers, data.n_heads, 2)
        head_map = fig(figures.head_scatter(c[..., 0], c[..., 1], ctx.labels, x_title="MDS 1", y_title="MDS 2",
                                            equal_axes=True),
                       point_links=figures.scatter_links(ctx.labels, ctx.head_link_of(doc)), how_to_read="head_map")
    label_counts = fig(figures.label_counts(ctx.label_counts), how_to_read="counts")
    layer_counts = fig(figures.layer_counts(ctx.labels), how_to_read="counts")
    raw = ctx.cfg.raw
    return HomePage(
        title=raw.site.title, description=raw.site.description, layers=data.layers, heads=data.n_heads,
        heads_total=ctx.n_heads_total, pairs=len(data.pairs), tokens=ctx.n_tokens,
        clear_heads=ctx.n_heads_total - ctx.label_counts.get(MIXED, 0), model_name=data.model["name_or_path"],
        corpus_name=ctx.corpus_name, truncated_count=ctx.truncated_count, max_length=ctx.max_length, grid=grid,
        labels=LABELS, head_map=head_map, head_map_pairs=an.head_map_pairs if an is not None else 0,
        head_map_sample=head_map_text(an, len(data.pairs), raw.analysis.seed, raw.analysis.head_map_pairs)
        if head_map is not None else "",
        label_counts=label_counts,
        pattern_rows=[PatternRow(name, rel(doc, pattern_doc(name)), ctx.label_counts.get(name, 0),
                                 LABEL_INFO[name].title) for name in LABELS],
        layer_counts=layer_counts, heads_json_href=rel(doc, HEADS_JSON), with_page=len(ctx.pair_docs), pair_scores_href=rel(doc, PAIR_SCORES_CSV + ".gz"),
        corpus_meta=ctx.corpus_meta, corpus_href=rel(doc, CORPUS), grid_marks=grid_mark_legend(marks))
