"""A page per pattern (and one for ``mixed``): what it means, the heads that
follow it, and the highest scores of any head."""

from __future__ import annotations

from dataclasses import dataclass

from generator.links import head_doc, rel
from generator.pages.common import Figures, HeadCard, SiteContext
from generator.registry import LABEL_INFO, MIXED


@dataclass(frozen=True)
class TopRow:
    href: str
    layer: int
    head: int
    label: str
    score: float
    threshold: float


@dataclass(frozen=True)
class PatternPage:
    pattern: str
    title: str
    text: str
    cards: list[HeadCard]
    top: list[TopRow]


def pattern_page(ctx: SiteContext, doc: str, pattern: str, top_k: int = 10) -> PatternPage:
    """The view-model of ``pattern``'s page: its heads best score first (``mixed``: head order), and the
    ``top_k`` highest scores of that pattern among all heads."""
    data, fig = ctx.data, Figures(doc)
    ranked = [h for h in data.heads if h.label == pattern]
    if pattern != MIXED:
        ranked.sort(key=lambda h: (-(h.scores[pattern] or 0.0), h.layer, h.head))
    cards = [ctx.head_card(doc, h.layer, h.head, fig, show_layer=True) for h in ranked]
    top = []
    if pattern != MIXED:
        scored = sorted((h for h in data.heads if h.scores[pattern] is not None),
                        key=lambda h: (-h.scores[pattern], h.layer, h.head))[:top_k]
        top = [TopRow(rel(doc, head_doc(h.layer, h.head)), h.layer, h.head, h.label, h.scores[pattern],
                      ctx.thresholds[pattern]) for h in scored]
    info = LABEL_INFO[pattern]
    return PatternPage(pattern=pattern, title=info.title, text=info.text, cards=cards, top=top)
