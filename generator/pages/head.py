"""A page per head: what it does in one sentence, where its attention goes
(the raw and value-weighted attention budget), its importance, label and
consistency, its scores against the thresholds, its example pairs, the head
view and the query/key view."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from markupsafe import Markup

from generator import figures, qk, value_norms, views
from generator.budget import CATEGORIES, CATEGORY_NAMES
from generator.describe import percent
from generator.links import IMPORTANCE, head_doc, layer_doc, pattern_doc, rel
from generator.pages.common import BUDGET_LEGEND, Figures, Link, PairText, SiteContext
from generator.pages.compare import HeadCompareSection, head_compare_section
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
    """The head's importance for the objective (Michel et al. 2019, "Are Sixteen Heads Really Better than
    One?"), as :class:`generator.analysis.run.AnalysisResults` computed it; every sentence is final text."""

    objective_text: str
    rank: int
    heads_total: int
    #: ``mean_p |L'_p - L_p|`` (loss units) and its bootstrap interval, e.g. "0.0123 (95% interval 0.0101 to 0.0147)".
    effect_text: str
    #: the signed loss change with its interval and what it says, e.g. "... not distinguishable from zero".
    loss_text: str
    loss_overlaps_zero: bool | None
    #: the signed change of the corpus metric with its interval ("" when not computed).
    metric_text: str
    #: Michel et al.'s raw gradient importance ``E_p |dL_p/dxi_h|`` (eq. 3), three significant digits ("" if none).
    #: All the numbers above show their largest value with three significant digits, in fixed point.
    gradient_text: str
    #: ``joint`` or ``separate``: the input the objective used, and the sentence saying why.
    input: str
    input_reason: str
    href: str


@dataclass(frozen=True)
class Neurons:
    pattern_dot: float
    other_dot: float | None
    top_share: float | None
    dims_for_80: int
    #: ``(dimension, row-centred contribution, uncentred mean q x k)``, largest contribution first.
    rows: list[tuple[int, float, float]]
    #: one paragraph on the ranking (:data:`generator.qk.NEURONS_METHOD`).
    method: str


@dataclass(frozen=True)
class BudgetRow:
    """One category of the head's budget: its share of the raw and value-weighted attention and the share
    of pairs on which it takes the largest part."""

    name: str
    title: str
    colour: str
    rule: str
    raw: float
    weighted: float
    lead_raw: float
    lead_weighted: float


@dataclass(frozen=True)
class HeadBudget:
    """Where the head's attention goes (:mod:`generator.budget`), raw and value-weighted (Kobayashi et al.
    2020, "Attention is Not Only a Weight: Analyzing Transformers with Vector Norms")."""

    #: the stacked bars, two rows: raw and value-weighted.
    figure: Markup
    #: every category, largest raw share first.
    rows: list[BudgetRow]
    #: one sentence on the corpus-wide spread: on how many pairs the leading categories lead.
    spread: str
    #: the attention-sink note (``None`` when the head is not a sink).
    sink: str | None


@dataclass(frozen=True)
class HeadPage:
    layer: int
    head: int
    description: str
    budget: HeadBudget | None
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


def _decimals(*values: float) -> int:
    """Decimals that show the largest of ``values`` with three significant digits (at least 3), so a value
    and its interval share one fixed-point format (importance values span orders of magnitude)."""
    largest = max((abs(v) for v in values if v is not None and np.isfinite(v)), default=0.0)
    return 3 if largest == 0 else max(3, 2 - int(np.floor(np.log10(largest))))


def _with_interval(value: float, ci, level: float, signed: bool = False) -> str:
    """``value`` and, when there is one, ``" (95% interval a to b)"``, all with the same decimals."""
    bounds = None if ci is None or np.isnan(ci).any() else (float(ci[0]), float(ci[1]))
    digits = _decimals(value, *(bounds or ()))
    text = f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"
    if bounds is not None:
        text += f" ({100 * level:.0f}% interval {bounds[0]:.{digits}f} to {bounds[1]:.{digits}f})"
    return text


def sink_note(raw: float, weighted: float) -> str:
    """The note of an attention-sink head (:func:`generator.value_norms.attention_sinks`).

    Args:
        raw: the head's raw ``cls + sep`` budget share (mean over queries and pairs), in [0, 1].
        weighted: the same share of its value-weighted attention (Kobayashi et al. 2020, §3).
    Returns:
        Sentences giving both numbers, what they mean, the rule and why (the page titles the note "Attention sink").
    """
    return (f"{percent(raw)} of this head's attention goes to [CLS] and [SEP], but only "
            f"{percent(weighted)} once each key is weighted by the norm of the vector it passes on "
            f"(Kobayashi et al. 2020, §5): most of that weight lands on vectors that carry little, so the head "
            f"moves less than its attention map suggests. {value_norms.SINK_RULE}")


def head_budget(ctx: SiteContext, fig: Figures, layer: int, head: int) -> HeadBudget | None:
    """The budget section of a head page: stacked bars (raw and value-weighted), the shares and pair leads
    per category, and the attention-sink note. ``None`` when the build computed no budget.

    Args:
        ctx: the site context (``data.budget``, ``data.value_budget``, ``data.budget_lead``,
            ``data.value_budget_lead``: ``[layers, heads, 11]``; ``data.attention_sinks``).
        fig: the page's figure embedder (the bars are its next figure).
        layer, head: the head, 0-indexed.
    """
    data = ctx.data
    if data.budget_sums is None:
        return None
    raw, weighted = data.budget[layer, head], data.value_budget[layer, head]
    lead, lead_w = data.budget_lead[layer, head], data.value_budget_lead[layer, head]
    figure = fig(figures.budget_bars(np.stack([raw, weighted]), ["raw attention", "value-weighted"],
                                     BUDGET_LEGEND), how_to_read="budget")
    rows = [BudgetRow(c.name, c.title, c.colour, c.description, float(raw[k]), float(weighted[k]), float(lead[k]),
                      float(lead_w[k])) for k, c in enumerate(CATEGORIES)]
    rows.sort(key=lambda r: -r.raw)
    leaders = sorted((k for k in range(len(CATEGORIES)) if lead[k] > 0), key=lambda k: -lead[k])
    parts = [f"{CATEGORIES[k].title} on {percent(float(lead[k]))}" for k in leaders[:3]]
    rest = len(leaders) - 3
    spread = (f"Pair by pair, the category with the largest raw share is {', '.join(parts)} of the "
              f"{len(data.pairs)} pairs" + (f" (and {rest} other categor{'y' if rest == 1 else 'ies'} on the rest)"
                                            if rest > 0 else "") + ".")
    sink = None
    if (layer, head) in data.attention_sinks:
        idx = [CATEGORY_NAMES.index("cls"), CATEGORY_NAMES.index("sep")]
        sink = sink_note(float(raw[idx].sum()), float(weighted[idx].sum()))
    return HeadBudget(figure=figure, rows=rows, spread=spread, sink=sink)


def head_importance(ctx: SiteContext, doc: str, layer: int, head: int) -> HeadImportance | None:
    """The importance paragraph of a head page, from :class:`generator.analysis.run.AnalysisResults`:
    rank (:meth:`~generator.analysis.run.AnalysisResults.importance_order`), the like-for-like masking effect
    with its interval, the signed loss and metric changes with theirs, Michel et al.'s raw gradient, and the
    objective's input. ``None`` when ablation did not run."""
    an = ctx.data.analysis
    order = an.importance_order() if an is not None else []
    if not order:
        return None
    level = an.bootstrap_level

    def at(a):
        return None if a is None or np.isnan(a[layer, head]) else float(a[layer, head])

    def ci(a):
        return None if a is None else a[layer, head]

    effect = at(an.ablation_effect)
    effect_text = "n/a" if effect is None else _with_interval(effect, ci(an.ablation_effect_ci), level)
    loss = at(an.loss_change)
    overlaps = None if an.loss_change_overlaps_zero is None else bool(an.loss_change_overlaps_zero[layer, head])
    if loss is None:
        loss_text = "n/a"
    else:
        loss_text = _with_interval(loss, ci(an.loss_change_ci), level, signed=True)
        if overlaps:
            loss_text += ": not distinguishable from zero"
        elif loss > 0:
            loss_text += ": masking it raises the loss, so the head helps the objective"
        elif loss < 0:
            loss_text += ": masking it lowers the loss, so the head works against the objective"
    metric = at(an.metric_change)
    metric_text = ""
    if metric is not None:
        metric_text = _with_interval(metric, ci(an.metric_change_ci), level, signed=True)
        if an.metric_change_overlaps_zero is not None and bool(an.metric_change_overlaps_zero[layer, head]):
            metric_text += ", not distinguishable from zero"
    note = an.inputs.get("importance", {})
    gradient = at(an.gradient_raw)
    return HeadImportance(
        objective_text=ctx.objective_text(), rank=order.index((layer, head)) + 1, heads_total=ctx.n_heads_total,
        effect_text=effect_text, loss_text=loss_text, loss_overlaps_zero=overlaps, metric_text=metric_text,
        gradient_text="" if gradient is None else f"{gradient:.{_decimals(gradient)}f}", input=note.get("input", ""),
        input_reason=note.get("reason", ""),
        href=rel(doc, IMPORTANCE))


def head_page(ctx: SiteContext, doc: str, layer: int, head: int) -> HeadPage:
    """The view-model of one head's page (figures in page order)."""
    data, fig = ctx.data, Figures(doc)
    h = data.head(layer, head)
    budget = head_budget(ctx, fig, layer, head)
    importance = head_importance(ctx, doc, layer, head)
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
        scaling = None if data.showcase.scaling is None else float(data.showcase.scaling[layer])
        extra = {name: terms[layer, head] for name, terms in data.showcase.extra.get(best, {}).items()}
        sizes = None
        if extra:  # name every logit term the architecture adds, with its size (what moves the softmax)
            sizes = qk.logit_term_sizes(q, k, scaling if scaling is not None else 1.0 / np.sqrt(q.shape[1]), extra,
                                        rows=~layout.special)
        qk_view = fig.view("qkview", views.qk_view_data(q, k, attention, layout, best_query(attention, cells),
                                                        scaling=scaling, extra=extra or None, term_sizes=sizes))
        nr = qk.pattern_neurons(q, k, layout, h.example_pattern)
        if nr["dims"]:
            neurons = Neurons(nr["pattern_dot"], nr["other_dot"], nr["top_share"], nr["dims_for_80"],
                              list(zip(nr["dims"], nr["values"], nr["raw_values"])), nr["method"])
    compare = head_compare_section(ctx, doc, fig, layer, head)
    return HeadPage(
        layer=layer, head=head, description=h.description, budget=budget, label=h.label, consistency=h.consistency,
        label_threshold=ctx.thresholds[h.label] if h.label != MIXED else None,
        prev=_neighbour(ctx, doc, layer, head, -1), next=_neighbour(ctx, doc, layer, head, +1),
        layer_href=rel(doc, layer_doc(layer)), pattern_href=rel(doc, pattern_doc(h.label)), importance=importance,
        pairs=len(data.pairs), scores_bar=scores_bar, score_rows=rows, example_pattern=h.example_pattern,
        examples=examples, best_pair=best, head_view=head_view, qk_view=qk_view, head_dim=data.model["head_dim"],
        neurons=neurons, compare=compare)
