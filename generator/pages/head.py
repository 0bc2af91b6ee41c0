"""A page per head: label and consistency, its scores against the
thresholds, its example pairs, the head view and the query/key view."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from markupsafe import Markup

from generator import figures, qk, views
from generator.links import IMPORTANCE, head_doc, layer_doc, pattern_doc, rel
from generator.pages.common import Figures, Link, PairText, SiteContext
from generator.pages.compare import HeadCompareSection, head_compare_section
from generator.pages.importance import importance_rank
from generator.registry import MIXED, PATTERNS


@dataclass(frozen=True)
class ScoreRow:
    pattern: str
    is_label: bool
    score: float | None
    threshold: float
    ratio: str
    defined: int


@dataclass(frozen=True)
class Example:
    pair: PairText
    score: float
    heatmap: Markup


@dataclass(frozen=True)
class HeadImportance:
    objective_text: str
    ablation: float
    rank: int
    heads_total: int
    gradient: float
    href: str


@dataclass(frozen=True)
class Neurons:
    pattern_dot: float
    other_dot: float | None
    top_share: float | None
    dims_for_80: int
    rows: list[tuple[int, float]]


@dataclass(frozen=True)
class HeadPage:
    layer: int
    head: int
    label: str
    consistency: float | None
    label_threshold: float | None
    prev: Link | None
    next: Link | None
    layer_href: str
    pattern_href: str
    importance: HeadImportance | None
    pairs: int
    scores_bar: Markup
    score_rows: list[ScoreRow]
    example_pattern: str
    examples: list[Example]
    best_pair: int
    head_view: Markup
    qk_view: Markup | None
    head_dim: int
    neurons: Neurons | None
    compare: HeadCompareSection | None = None


def _neighbour(ctx: SiteContext, doc: str, layer: int, head: int, step: int) -> Link | None:
    k = layer * ctx.data.n_heads + head + step
    if not 0 <= k < ctx.n_heads_total:
        return None
    l, h = divmod(k, ctx.data.n_heads)
    text = f"← head {l}-{h}" if step < 0 else f"head {l}-{h} →"
    return Link(rel(doc, head_doc(l, h)), text)


def best_query(attention: np.ndarray, cells: np.ndarray) -> int:
    """The query position that puts most attention on a pattern's keys.

    Args:
        attention: ``[n, n]`` one head on one pair (rows = query).
        cells: ``[n, n]`` bool, the (query, key) cells of the pattern (:func:`generator.qk.pattern_pairs`).
    Returns:
        the row index with the largest attention mass on ``cells``.
    """
    return int(np.argmax((attention * cells).sum(-1)))


def head_page(ctx: SiteContext, doc: str, layer: int, head: int) -> HeadPage:
    """The view-model of one head's page (figures in page order)."""
    data, fig = ctx.data, Figures(doc)
    h = data.head(layer, head)
    an = data.analysis
    importance = None
    if an is not None and an.ablation is not None:
        importance = HeadImportance(ctx.objective_text(), float(an.ablation[layer, head]),
                                    importance_rank(ctx, layer, head), ctx.n_heads_total,
                                    float(an.gradient[layer, head]), rel(doc, IMPORTANCE))
    scores_bar = fig(figures.scores_bar(h.scores, ctx.thresholds, h.label), how_to_read="scores")
    rows = []
    for k, p in enumerate(PATTERNS):
        t = ctx.thresholds[p]
        s = h.scores[p]
        rows.append(ScoreRow(p, p == h.label, s, t, "n/a" if s is None or t == 0 else f"{s / t:.2f}",
                             int(data.sums.count[layer, head, k])))
    examples = []
    column = PATTERNS.index(h.example_pattern)
    for ex in h.examples:
        tokens = data.layouts[ex].tokens
        heat = fig(figures.attention_heatmap(data.showcase.attention[ex][layer, head], tokens),
                   hover_tokens=figures.escape_tokens(tokens), how_to_read="attention")
        examples.append(Example(ctx.pair_text(doc, ex), float(data.pair_scores[ex, layer, head, column]), heat))
    best = h.examples[0]
    layout = data.layouts[best]
    attention = data.showcase.attention[best][layer, head]
    head_view = fig.view("headview", views.head_view_data(attention, layout))
    qk_view = neurons = None
    if best in data.showcase.qk:
        q, k = (x[layer, head] for x in data.showcase.qk[best])
        cells = qk.pattern_pairs(layout, h.example_pattern)
        qk_view = fig.view("qkview", views.qk_view_data(q, k, attention, layout, best_query(attention, cells)))
        nr = qk.pattern_neurons(q, k, layout, h.example_pattern)
        if nr["dims"]:
            neurons = Neurons(nr["pattern_dot"], nr["other_dot"], nr["top_share"], nr["dims_for_80"],
                              list(zip(nr["dims"], nr["values"])))
    compare = head_compare_section(ctx, doc, fig, layer, head)
    return HeadPage(
        layer=layer, head=head, label=h.label, consistency=h.consistency,
        label_threshold=ctx.thresholds[h.label] if h.label != MIXED else None,
        prev=_neighbour(ctx, doc, layer, head, -1), next=_neighbour(ctx, doc, layer, head, +1),
        layer_href=rel(doc, layer_doc(layer)), pattern_href=rel(doc, pattern_doc(h.label)), importance=importance,
        pairs=len(data.pairs), scores_bar=scores_bar, score_rows=rows, example_pattern=h.example_pattern,
        examples=examples, best_pair=best, head_view=head_view, qk_view=qk_view, head_dim=data.model["head_dim"],
        neurons=neurons, compare=compare)
