"""A page per pattern (and one for ``mixed``): what it means, the heads that
follow it, and the highest scores of any head. The ``mixed`` page groups its
heads by where most of their attention goes (the leading category of their
attention budget, :mod:`generator.budget`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from generator.budget import CATEGORIES
from generator.links import head_doc, rel
from generator.pages.common import Figures, HeadCard, SiteContext, leading_category
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
class MixedGroup:
    """The ``mixed`` heads whose raw attention budget's largest share is one category."""

    category: str
    title: str
    #: the category's rule, in words (:attr:`generator.budget.BudgetCategory.description`).
    rule: str
    colour: str
    cards: list[HeadCard]

    @property
    def count_text(self) -> str:
        """``"1 head"`` or ``"44 heads"``."""
        return f"{len(self.cards)} head{'' if len(self.cards) == 1 else 's'}"


@dataclass(frozen=True)
class PatternPage:
    pattern: str
    title: str
    text: str
    cards: list[HeadCard]
    top: list[TopRow]
    #: ``mixed`` only: its heads grouped by leading budget category, largest group first (empty otherwise).
    groups: list[MixedGroup] = field(default_factory=list)


def mixed_groups(ctx: SiteContext, doc: str, fig: Figures, heads: list) -> list[MixedGroup]:
    """Group ``mixed`` heads by the budget category that takes the largest share of their raw attention.

    Args:
        ctx: the site context.
        doc: the page's path (for links).
        fig: the page's figure embedder (each card's thumbnail is its next figure).
        heads: the :class:`generator.scoring.HeadSummary` s to group, with their ``budget``.
    Returns:
        one group per leading category present, the largest first (category order on ties); inside a group
        the heads with the largest share on that category first. Empty when no head has a budget.
    """
    by_category: dict[str, list] = {}
    for h in heads:
        if h.budget:
            by_category.setdefault(leading_category(h.budget), []).append(h)
    order = [c for c in CATEGORIES if c.name in by_category]
    order.sort(key=lambda c: -len(by_category[c.name]))
    for name, group in by_category.items():
        group.sort(key=lambda h: (-h.budget[name], h.layer, h.head))
    return [MixedGroup(c.name, c.title, c.description, c.colour,
                       [ctx.head_card(doc, h.layer, h.head, fig, show_layer=True) for h in by_category[c.name]])
            for c in order]


def pattern_page(ctx: SiteContext, doc: str, pattern: str, top_k: int = 10) -> PatternPage:
    """The view-model of ``pattern``'s page: its heads best score first (``mixed``: grouped by leading budget
    category, :func:`mixed_groups`, and ``cards`` in the groups' order), and the ``top_k`` highest scores of that
    pattern among all heads."""
    data, fig = ctx.data, Figures(doc)
    ranked = [h for h in data.heads if h.label == pattern]
    if pattern != MIXED:
        ranked.sort(key=lambda h: (-(h.scores[pattern] or 0.0), h.layer, h.head))
    groups = mixed_groups(ctx, doc, fig, ranked) if pattern == MIXED else []
    if groups:
        cards = [card for g in groups for card in g.cards]
    else:
        cards = [ctx.head_card(doc, h.layer, h.head, fig, show_layer=True) for h in ranked]
    top = []
    if pattern != MIXED:
        scored = sorted((h for h in data.heads if h.scores[pattern] is not None),
                        key=lambda h: (-h.scores[pattern], h.layer, h.head))[:top_k]
        top = [TopRow(rel(doc, head_doc(h.layer, h.head)), h.layer, h.head, h.label, h.scores[pattern],
                      ctx.thresholds[pattern]) for h in scored]
    info = LABEL_INFO[pattern]
    return PatternPage(pattern=pattern, title=info.title, text=info.text, cards=cards, top=top, groups=groups)
