"""A page per layer: where each head's attention goes (one budget bar per
head), a gallery of its heads with their descriptions, and their scores."""

from __future__ import annotations

from dataclasses import dataclass

from markupsafe import Markup

from generator import figures
from generator.links import head_doc, rel
from generator.pages.common import BUDGET_LEGEND, Figures, HeadCard, SiteContext
from generator.registry import LABEL_INFO, PATTERNS


@dataclass(frozen=True)
class LayerRow:
    head: int
    href: str
    label: str
    scores: list[float | None]


@dataclass(frozen=True)
class ScoreColumn:
    """A column of the layer's score table: the pattern's name, and the short header that keeps the table
    narrow (the full name is the header's tooltip)."""

    pattern: str
    short: str


@dataclass(frozen=True)
class LayerPage:
    layer: int
    label_counts: list[tuple[str, int]]
    #: one stacked bar per head: its raw attention budget (``None`` when the build computed no budget).
    budget: Markup | None
    cards: list[HeadCard]
    patterns: tuple[str, ...]
    columns: list[ScoreColumn]
    rows: list[LayerRow]


def layer_page(ctx: SiteContext, doc: str, layer: int) -> LayerPage:
    """The view-model of ``layer``'s page (figures in page order: the budget bars, then the cards' thumbnails)."""
    data, fig = ctx.data, Figures(doc)
    budget = None
    if data.budget_sums is not None:
        budget = fig(figures.budget_bars(data.budget[layer], [f"head {h}" for h in range(data.n_heads)],
                                         BUDGET_LEGEND),
                     how_to_read="budget")
    cards = [ctx.head_card(doc, layer, head, fig) for head in range(data.n_heads)]
    rows = [LayerRow(head, rel(doc, head_doc(layer, head)), data.head(layer, head).label,
                     [data.head(layer, head).scores[p] for p in PATTERNS]) for head in range(data.n_heads)]
    return LayerPage(layer=layer, label_counts=ctx.count_labels(ctx.labels[layer]), budget=budget, cards=cards,
                     patterns=PATTERNS, columns=[ScoreColumn(p, LABEL_INFO[p].short) for p in PATTERNS], rows=rows)
