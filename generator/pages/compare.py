"""View-models of the comparison of two checkpoints (``compare:``): the
"What fine-tuning changed" page, the before / after / difference section of
each head page and the model view of differences on each pair page.

Differences are drawn on a diverging scale, as in the attention-difference
figures of fine-tuning studies (Kovaleva et al. 2019, "Revealing the Dark
Secrets of BERT", section 5): red where the second model attends more
("enhanced after fine-tuning"), blue where it attends less ("weakened"),
white for no change.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
from markupsafe import Markup

from generator import figures
from generator.compare import CompareResults, HeadChange, Shift, largest_shifts
from generator.links import COMPARE, head_doc, rel
from generator.pages.common import Figures, Link, PairText, SiteContext, num
from generator.registry import PATTERNS

#: Colours of the difference scale: weakened (negative), no change, enhanced (positive).
WEAKENED, UNCHANGED, ENHANCED = "#2166ac", "#ffffff", "#b2182b"


def difference_heatmap(diff: np.ndarray, tokens, *, zmax: float, size: int | None = None, ticks: bool = True,
                       title: str | None = None) -> go.Figure:
    """Heatmap of an attention difference (after minus before) of one head on one pair.

    Args:
        diff: ``[n, n]`` after minus before, probability units (rows = query).
        tokens: the ``n`` tokens.
        zmax: the colour range is ``[-zmax, zmax]``, 0 white, positive
            (enhanced) red, negative (weakened) blue.
    Returns:
        A figure laid out like :func:`generator.figures.attention_heatmap`.
    """
    fig = figures.attention_heatmap(diff, tokens, size=size, ticks=ticks, title=title)
    fig.update_traces(zmin=-float(zmax), zmax=float(zmax), zmid=0.0,
                      colorscale=[[0.0, WEAKENED], [0.5, UNCHANGED], [1.0, ENHANCED]])
    return fig


def _zmax(diff: np.ndarray) -> float:
    return max(float(np.max(np.abs(diff))), 1e-6)


# ------------------------------------------------------------------ the page

@dataclass(frozen=True)
class LabelChange:
    href: str
    head: str
    before: str
    after: str
    js: float


@dataclass(frozen=True)
class ShiftRow:
    href: str
    head: str
    kind: str
    name: str
    before: float
    after: float
    change: float


@dataclass(frozen=True)
class ClassificationSection:
    baseline: float
    loss_baseline: float
    ablation_map: Markup
    loss_map: Markup
    top: list[tuple[str, str, float, float]]  # (href, head, accuracy change, loss change)
    group: list[Link]
    group_by: str
    group_accuracy: float
    group_loss: float
    cls_head: Link
    pair: PairText
    cls_rows: Markup


@dataclass(frozen=True)
class ComparePage:
    before_name: str
    after_name: str
    after_model: str
    before_model: str
    rows: int
    heads_total: int
    js_map: Markup
    js_mean: float
    most_changed: list[LabelChange]
    label_changes: list[LabelChange]
    shifts: list[ShiftRow]
    has_budget: bool
    label_counts: list[tuple[str, int, int]]
    classification: ClassificationSection | None


def _head_text(layer: int, head: int) -> str:
    return f"layer {layer}, head {head}"


def _cls_rows_figure(tokens, before: np.ndarray, after: np.ndarray, names: tuple[str, str]) -> go.Figure:
    """Bars of a [CLS] attention row ``[n]`` without and with the group masked."""
    x = list(range(len(tokens)))
    text = figures.escape_tokens(tokens)
    return go.Figure(
        [go.Bar(x=x, y=before, name=html.escape(names[0]), marker_color="#1f5fa8", customdata=text,
                hovertemplate="%{customdata}: %{y:.3f}<extra></extra>"),
         go.Bar(x=x, y=after, name=html.escape(names[1]), marker_color="#d95f02", customdata=text,
                hovertemplate="%{customdata}: %{y:.3f}<extra></extra>")],
        layout=dict(template=go.layout.Template(), barmode="group", height=320, margin=dict(l=50, r=10, t=10, b=90),
                    paper_bgcolor="rgba(0,0,0,0)", plot_bgcolor="rgba(0,0,0,0)",
                    xaxis=dict(tickmode="array", tickvals=x, ticktext=text, tickangle=-60),
                    yaxis=dict(title="attention from [CLS]"), legend=dict(orientation="h", y=1.1)))


def compare_page(ctx: SiteContext, doc: str) -> ComparePage:
    """The view-model of the "What fine-tuning changed" page."""
    data, fig = ctx.data, Figures(doc)
    cmp: CompareResults = data.compare
    link = ctx.head_link_of(doc)
    by_js = sorted(cmp.heads, key=lambda c: -c.js_divergence)

    def change_row(c: HeadChange) -> LabelChange:
        return LabelChange(link(c.layer, c.head), _head_text(c.layer, c.head), c.before_label, c.after_label,
                           c.js_divergence)

    def shift_row(s: Shift) -> ShiftRow:
        return ShiftRow(link(s.layer, s.head), _head_text(s.layer, s.head), s.kind, s.name, s.before, s.after,
                        s.change)

    classification = None
    cc = cmp.classification
    if cc is not None:
        # the heads the classifier needs most: largest accuracy drop, then largest loss rise
        order = np.lexsort((-cc.loss_change.reshape(-1), cc.ablation.reshape(-1)))[:8]
        top = [(link(*divmod(int(k), data.n_heads)), _head_text(*divmod(int(k), data.n_heads)),
                float(cc.ablation.flat[k]), float(cc.loss_change.flat[k])) for k in order]
        masked_names = (f"{cmp.after_name}", f"{cmp.after_name}, {len(cc.group)} heads masked")
        classification = ClassificationSection(
            baseline=cc.baseline, loss_baseline=cc.loss_baseline,
            ablation_map=fig(figures.head_values(cc.ablation, title="accuracy change"), links=ctx.grid_links(doc)),
            loss_map=fig(figures.head_values(cc.loss_change, title="cross-entropy change (nats)"),
                         links=ctx.grid_links(doc)),
            top=top, group=[Link(link(l, h), _head_text(l, h)) for l, h in cc.group], group_by=cc.group_by,
            group_accuracy=cc.group_accuracy, group_loss=cc.group_loss, cls_head=Link(link(*cc.cls_head), _head_text(*cc.cls_head)),
            pair=ctx.pair_text(doc, cc.pair_index),
            cls_rows=fig(_cls_rows_figure(cc.tokens, cc.cls_before, cc.cls_after, masked_names)))
    return ComparePage(
        before_name=cmp.before_name, after_name=cmp.after_name, after_model=cmp.after_model,
        before_model=data.model["name_or_path"], rows=cmp.rows, heads_total=ctx.n_heads_total,
        js_map=fig(figures.head_values(cmp.js, title="JS divergence (bits)", signed=False),
                   links=ctx.grid_links(doc)),
        js_mean=float(cmp.js.mean()),
        most_changed=[change_row(c) for c in by_js[:10]],
        label_changes=[change_row(c) for c in cmp.heads if c.label_changed],
        shifts=[shift_row(s) for s in largest_shifts(cmp.heads, 15)],
        has_budget=any(c.budget_change is not None for c in cmp.heads),
        label_counts=cmp.label_counts(), classification=classification)


# ------------------------------------------------------------------ head page section

@dataclass(frozen=True)
class ScoreChangeRow:
    pattern: str
    before: float | None
    after: float | None
    change: float | None


@dataclass(frozen=True)
class HeadCompareSection:
    """Before / after / difference of one head (for its page)."""

    before_name: str
    after_name: str
    compare_href: str
    before_label: str
    after_label: str
    js: float
    rows: list[ScoreChangeRow]
    budget_rows: list[ScoreChangeRow]
    pair: PairText | None
    before_map: Markup | None
    after_map: Markup | None
    diff_map: Markup | None
    enhanced: str
    weakened: str


def head_compare_section(ctx: SiteContext, doc: str, fig: Figures, layer: int, head: int) -> HeadCompareSection | None:
    """The comparison section of a head page, ``None`` without ``compare:``.
    Call it after the page's other figures (figure ids follow page order)."""
    cmp: CompareResults | None = ctx.data.compare
    if cmp is None:
        return None
    c = cmp.head(layer, head)
    h = ctx.data.head(layer, head)
    ex = h.examples[0] if h.examples else None
    pair = before_map = after_map = diff_map = None
    if ex is not None and ex in ctx.data.showcase.attention and ex in cmp.after_attention:
        tokens = ctx.data.layouts[ex].tokens
        before = ctx.data.showcase.attention[ex][layer, head]
        after = cmp.after_attention[ex][layer, head]
        diff = after - before
        hover = figures.escape_tokens(tokens)
        pair = ctx.pair_text(doc, ex)
        before_map = fig(figures.attention_heatmap(before, tokens, title=cmp.before_name), hover_tokens=hover)
        after_map = fig(figures.attention_heatmap(after, tokens, title=cmp.after_name), hover_tokens=hover)
        diff_map = fig(difference_heatmap(diff, tokens, zmax=_zmax(diff),
                                          title=f"{cmp.after_name} minus {cmp.before_name}"), hover_tokens=hover)
    budget_rows = []
    if c.budget_change is not None:
        budget_rows = [ScoreChangeRow(k, c.before_budget[k], c.after_budget.get(k), v)
                       for k, v in c.budget_change.items()]
    return HeadCompareSection(
        before_name=cmp.before_name, after_name=cmp.after_name, compare_href=rel(doc, COMPARE),
        before_label=c.before_label, after_label=c.after_label, js=c.js_divergence,
        rows=[ScoreChangeRow(p, c.before_scores[p], c.after_scores[p], c.score_change[p]) for p in PATTERNS],
        budget_rows=budget_rows, pair=pair, before_map=before_map, after_map=after_map, diff_map=diff_map,
        enhanced=ENHANCED, weakened=WEAKENED)


# ------------------------------------------------------------------ pair page section

@dataclass(frozen=True)
class DiffCell:
    """One head's difference thumbnail: link to the head, hover title, figure."""

    href: str
    title: str
    thumb: Markup


@dataclass(frozen=True)
class PairCompareSection:
    """Every head's after-minus-before thumbnail on one pair (a model view of
    differences): ``rows[layer][head]``, layers and heads 0-indexed."""

    before_name: str
    after_name: str
    zmax: float
    heads: int
    rows: list[list[DiffCell]]
    enhanced: str
    weakened: str


def pair_compare_section(ctx: SiteContext, doc: str, fig: Figures, index: int) -> PairCompareSection | None:
    """The difference model view of pair ``index``, ``None`` without
    ``compare:`` or for a pair longer than ``view_max_tokens``. One colour
    range ``[-m, m]`` for all heads, ``m`` the largest absolute difference on
    the pair, so thumbnails compare with each other."""
    cmp: CompareResults | None = ctx.data.compare
    layout = ctx.data.layouts[index]
    if cmp is None or index not in cmp.after_attention or layout.n > ctx.view_max_tokens:
        return None
    diff = cmp.after_attention[index] - ctx.data.showcase.attention[index]  # [layers, heads, n, n]
    m = _zmax(diff)
    rows = []
    for layer in range(ctx.data.layers):
        row = []
        for head in range(ctx.data.n_heads):
            c = cmp.head(layer, head)
            d = diff[layer, head]
            thumb = fig(difference_heatmap(d, layout.tokens, zmax=m, size=48, ticks=False), css="thumb", static=True)
            row.append(DiffCell(href=rel(doc, head_doc(layer, head)),
                                title=f"layer {layer}, head {head}: {c.before_label} -> {c.after_label}, "
                                      f"largest |difference| {num(float(np.max(np.abs(d))))}", thumb=thumb))
        rows.append(row)
    return PairCompareSection(before_name=cmp.before_name, after_name=cmp.after_name, zmax=m,
                              heads=ctx.data.n_heads, rows=rows, enhanced=ENHANCED, weakened=WEAKENED)
