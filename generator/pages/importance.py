"""The Importance page: which heads matter for the model's objective (head
masking, gradient importance, groups of heads masked together)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from markupsafe import Markup

from generator import figures
from generator.links import head_doc, rel
from generator.pages.common import Figures, Link, SiteContext


@dataclass(frozen=True)
class RankedHead:
    rank: int
    href: str
    layer: int
    head: int
    label: str
    ablation: float
    gradient: float


@dataclass(frozen=True)
class GroupRow:
    name: str
    heads: int
    masked_metric: float
    change: float
    top: Link
    top_movement: float


@dataclass(frozen=True)
class GroupBeforeAfter:
    name: str
    layer: int
    head: int
    pair_index: int
    masked: list[Link]
    before: Markup
    after: Markup


@dataclass(frozen=True)
class ImportancePage:
    objective_text: str
    metric_name: str
    baseline: float
    objective_pairs: int
    pairs: int
    has_ablation: bool
    unsigned_metric: bool
    ablation_map: Markup | None
    gradient_map: Markup | None
    heads_total: int
    rank_correlation: float | None
    scatter: Markup | None
    ranked: list[RankedHead]
    groups: list[GroupRow]
    biggest: GroupBeforeAfter | None


def importance_order(ctx: SiteContext) -> list[tuple[int, int]]:
    """Heads, the one whose masking hurts the metric most first (for the
    unsigned mean change: the largest change first); ties by head order."""
    an = ctx.data.analysis
    signed = an.ablation.reshape(-1)
    if an.metric_name in ("mean_similarity",):
        signed = -signed
    order = np.argsort(signed, kind="stable")
    return [divmod(int(k), ctx.data.n_heads) for k in order]


def importance_rank(ctx: SiteContext, layer: int, head: int) -> int:
    """1-based rank of a head in :func:`importance_order`."""
    return importance_order(ctx).index((layer, head)) + 1


def importance_page(ctx: SiteContext, doc: str, top_k: int = 10) -> ImportancePage:
    """The Importance page's view-model (figures in page order)."""
    data, fig, an = ctx.data, Figures(doc), ctx.data.analysis
    ablation_map = gradient_map = scatter = None
    ranked: list[RankedHead] = []
    if an.ablation is not None:
        ablation_map = fig(figures.head_values(an.ablation, title="metric change"), how_to_read="head_values")
        gradient_map = fig(figures.head_values(an.gradient, title="normalised gradient importance", signed=False),
                           how_to_read="head_values")
        scatter = fig(figures.head_scatter(np.abs(an.ablation), an.gradient, ctx.labels,
                                           x_title="|metric change| when masked alone",
                                           y_title="normalised gradient importance"),
                      point_links=figures.scatter_links(ctx.labels, ctx.head_link_of(doc)), how_to_read="scatter")
        ranked = [RankedHead(k + 1, rel(doc, head_doc(l, h)), l, h, ctx.labels[l, h], float(an.ablation[l, h]),
                             float(an.gradient[l, h])) for k, (l, h) in enumerate(importance_order(ctx)[:top_k])]
    groups = [GroupRow(g.name, len(g.heads), g.masked_metric, g.change,
                       Link(rel(doc, head_doc(*g.top)), f"layer {g.top[0]}, head {g.top[1]}"), g.top_movement)
              for g in an.groups]
    biggest = None
    if an.groups:
        g = max(an.groups, key=lambda g: (abs(g.change), -len(g.heads)))
        tokens = data.layouts[g.pair_index].tokens
        hover = figures.escape_tokens(tokens)
        before = fig(figures.attention_heatmap(g.before, tokens, size=320), hover_tokens=hover)
        after = fig(figures.attention_heatmap(g.after, tokens, size=320), hover_tokens=hover, how_to_read="attention")
        biggest = GroupBeforeAfter(g.name, g.top[0], g.top[1], g.pair_index,
                                   [Link(rel(doc, head_doc(l, h)), f"{l}-{h}") for l, h in g.heads], before, after)
    return ImportancePage(
        objective_text=ctx.objective_text(), metric_name=an.metric_name, baseline=an.baseline,
        objective_pairs=an.objective_pairs, pairs=len(data.pairs), has_ablation=an.ablation is not None,
        unsigned_metric=an.metric_name == "mean_similarity", ablation_map=ablation_map, gradient_map=gradient_map,
        heads_total=ctx.n_heads_total, rank_correlation=an.rank_correlation, scatter=scatter, ranked=ranked,
        groups=groups, biggest=biggest)
