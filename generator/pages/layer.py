"""A page per layer: a gallery of its heads and their scores."""

from __future__ import annotations

from dataclasses import dataclass

from generator.links import head_doc, rel
from generator.pages.common import Figures, HeadCard, SiteContext
from generator.registry import PATTERNS


@dataclass(frozen=True)
class LayerRow:
    head: int
    href: str
    label: str
    scores: list[float | None]


@dataclass(frozen=True)
class LayerPage:
    layer: int
    label_counts: list[tuple[str, int]]
    cards: list[HeadCard]
    patterns: tuple[str, ...]
    rows: list[LayerRow]


def layer_page(ctx: SiteContext, doc: str, layer: int) -> LayerPage:
    """The view-model of ``layer``'s page."""
    data, fig = ctx.data, Figures(doc)
    cards = [ctx.head_card(doc, layer, head, fig) for head in range(data.n_heads)]
    rows = [LayerRow(head, rel(doc, head_doc(layer, head)), data.head(layer, head).label,
                     [data.head(layer, head).scores[p] for p in PATTERNS]) for head in range(data.n_heads)]
    return LayerPage(layer=layer, label_counts=ctx.count_labels(ctx.labels[layer]), cards=cards, patterns=PATTERNS,
                     rows=rows)
