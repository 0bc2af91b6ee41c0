"""The Importance page: which heads matter for the model's objective.

Head masking and Michel et al.'s gradient importance measured like for like
(Michel, Levy & Neubig 2019, "Are Sixteen Heads Really Better than One?"),
the signed changes with percentile bootstrap intervals over pairs (Efron &
Tibshirani 1993, "An Introduction to the Bootstrap"), groups of heads masked
together, the head map, the input each analysis read and every analysis a
setting switched off. The numbers come from
:class:`generator.analysis.run.AnalysisResults`; this module only words them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from markupsafe import Markup

from generator import figures
from generator.links import head_doc, rel
from generator.pages.common import HOW_TO_READ, Figures, Link, SiteContext, num

#: analysis name (as in ``AnalysisResults.inputs`` / ``skipped``) -> how the pages name it
ANALYSIS_TITLES = {
    "importance": "head importance (masking one head at a time, gradients)",
    "group_masking": "masking groups of heads",
    "attribution": "integrated gradients (pair pages)",
    "perturbed_masking": "perturbed masking (pair pages)",
    "head_map": "head map",
}

#: input setting -> how the pages name it
INPUT_TITLES = {"joint": "the joint pair [CLS] a [SEP] b [SEP]", "separate": "each sentence alone"}

#: the per-pair loss L_p of each objective and corpus metric (generator.analysis.objective)
_LOSS_TEXT = {
    ("similarity", "spearman"): "(cos − y′)², the squared gap between the pair's cosine similarity and its label "
                                "scaled to [0, 1] (sentence-transformers' CosineSimilarityLoss)",
    ("similarity", "mean_similarity"): "the pair's cosine similarity itself (the pairs carry no labels)",
    ("mlm", "pll_per_token"): "minus the pair's pseudo-log-likelihood (nats)",
    ("classification", "accuracy"): "the cross-entropy of the pair's gold class",
}

#: corpus metric -> its short name in a title
_METRIC_SHORT = {"spearman": "Spearman's ρ", "mean_similarity": "the mean similarity",
                 "pll_per_token": "the PLL per token", "accuracy": "the accuracy"}

#: corpus metric -> its name in a sentence
_METRIC_TEXT = {"spearman": "Spearman's ρ between similarity and label", "mean_similarity": "the mean similarity",
                "pll_per_token": "the pseudo-log-likelihood per token", "accuracy": "the accuracy"}


@dataclass(frozen=True)
class Interval:
    """A value with its bootstrap interval, formatted, and whether the interval contains 0."""

    value: str
    low: str
    high: str
    overlaps_zero: bool


@dataclass(frozen=True)
class RankedHead:
    rank: int
    href: str
    layer: int
    head: int
    label: str
    ablation_effect: Interval
    loss_change: Interval
    metric_change: Interval
    gradient: str


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
class InputRow:
    """Which input one analysis read, and why."""

    analysis: str
    input: str
    reason: str


@dataclass(frozen=True)
class SkippedRow:
    """An analysis that did not run, and why."""

    analysis: str
    reason: str


@dataclass(frozen=True)
class Ablation:
    """The head-masking part of the page (only when ``analysis.importance`` ran)."""

    loss_text: str
    metric_text: str
    ci_level: str
    resamples: int
    seed: int
    like_for_like: Markup
    rank_correlation: float | None
    agreement: str
    loss_chart: Markup
    intervals_how_to_read: str
    loss_reading: str
    loss_excluding_zero: int
    loss_helps: int
    loss_hurts: int
    metric_chart: Markup
    metric_reading: str
    metric_excluding_zero: int
    gradient_map: Markup
    ranked: list[RankedHead]
    ranked_by: str
    ranked_title: str
    ranked_overlap_sentence: str
    excluding_sentence: str


@dataclass(frozen=True)
class ImportancePage:
    objective_text: str
    metric_name: str
    metric_title: str
    baseline: float | None
    objective_pairs: int
    pairs: int
    sample_text: str
    truncation_text: str
    max_length: int
    heads_total: int
    inputs: list[InputRow]
    input_summary: str
    skipped: list[SkippedRow]
    ablation: Ablation | None
    groups: list[GroupRow]
    biggest: GroupBeforeAfter | None
    head_map: Markup | None
    head_map_pairs: int
    head_map_text: str


def importance_order(ctx: SiteContext) -> list[tuple[int, int]]:
    """Kept so that the head and heads-table pages import unchanged until they
    call :meth:`AnalysisResults.importance_order` themselves; the order is
    defined there only."""
    return ctx.data.analysis.importance_order()


def importance_rank(ctx: SiteContext, layer: int, head: int) -> int:
    """1-based rank of a head in :meth:`AnalysisResults.importance_order` (kept
    for the head page, see :func:`importance_order`)."""
    return ctx.data.analysis.importance_order().index((layer, head)) + 1


def interval(values: np.ndarray, ci: np.ndarray | None, layer: int, head: int, digits: int = 4) -> Interval:
    """One head's value and ``[low, high]`` interval, formatted with ``digits`` decimals."""
    v = float(values[layer, head])
    if ci is None or np.isnan(ci[layer, head]).any():
        return Interval(num(v, digits), "n/a", "n/a", True)
    low, high = (float(x) for x in ci[layer, head])
    return Interval(num(v, digits), num(low, digits), num(high, digits), bool(low <= 0 <= high))


def excluding_zero(ci: np.ndarray | None) -> int:
    """How many heads have an interval (``[layers, heads, 2]``) that lies wholly above or below 0."""
    if ci is None:
        return 0
    c = np.asarray(ci, dtype=np.float64)
    defined = ~np.isnan(c).any(-1)
    return int(np.sum(defined & ((c[..., 0] > 0) | (c[..., 1] < 0))))


def agreement_sentence(rho: float | None) -> str:
    """How well ablation and gradient importance agree, in words, from Spearman's ρ over heads."""
    if rho is None or np.isnan(rho):
        return "The rank correlation is undefined (too few heads, or a constant importance)."
    strength = "strongly" if rho >= 0.7 else "moderately" if rho >= 0.4 else "weakly" if rho > 0 else "not"
    return (f"They agree {strength} (ρ = {rho:.2f}); where they disagree, masking a head moves the loss far "
            "from its first-order (linear) estimate.")


def _sample_text(an, pairs: int, objective_pairs_setting: int) -> str:
    if an.objective_pairs < pairs:
        return (f"an evenly spaced sample of {an.objective_pairs} of the {pairs} pairs "
                f"(analysis.objective_pairs = {objective_pairs_setting})")
    return f"all {pairs} pairs (analysis.objective_pairs = {objective_pairs_setting} is not reached)"


def _ablation(ctx: SiteContext, doc: str, fig: Figures, top_k: int) -> Ablation:
    an, data = ctx.data.analysis, ctx.data
    acfg = ctx.cfg.raw.analysis
    total = ctx.n_heads_total
    level = f"{100 * an.bootstrap_level:g}%"
    links = ctx.head_link_of(doc)
    directed, higher = an.metric_directed, an.higher_is_better
    undirected_loss = (an.objective, an.metric_name) == ("similarity", "mean_similarity")

    like_for_like = fig(figures.head_scatter(an.ablation_effect, an.gradient_raw, ctx.labels,
                                             x_title="ablation effect: mean over pairs of |ΔL| when masked alone",
                                             y_title="gradient importance E|∂L/∂ξ| (raw)"),
                        point_links=figures.scatter_links(ctx.labels, links), how_to_read="scatter")
    if undirected_loss:
        pos, neg = ("masking raises the similarity", "#1f5fa8"), ("masking lowers the similarity", "#d95f02")
        loss_reading = ("Without labels the per-pair loss is the similarity itself, which has no better "
                        "direction: above 0, masking the head raises the pairs' similarity; below 0, it lowers it.")
    else:
        pos, neg = ("masking raises the loss: the head helps", "#1f5fa8"), \
                   ("masking lowers the loss: the head hurts", "#d95f02")
        loss_reading = ("Above 0, masking the head raises the loss on average: the head helps the objective. "
                        "Below 0, the model does better without it: the head hurts.")
    loss_chart = fig(figures.signed_intervals(an.loss_change, an.loss_change_ci,
                                              y_title="mean ΔL (masked − unmasked)", positive=pos, negative=neg,
                                              level=an.bootstrap_level),
                     point_links=figures.signed_interval_links(an.loss_change, an.loss_change_ci, links))
    c = np.asarray(an.loss_change_ci, dtype=np.float64)
    helps, hurts = int(np.sum(c[..., 0] > 0)), int(np.sum(c[..., 1] < 0))

    metric_text = _METRIC_TEXT.get(an.metric_name, an.metric_name)
    metric_short = _METRIC_SHORT.get(an.metric_name, an.metric_name)
    if not directed:
        mpos, mneg = ("masking raises the mean similarity", "#1f5fa8"), \
                     ("masking lowers the mean similarity", "#d95f02")
        metric_reading = ("The mean similarity of unlabelled pairs has no better direction: the sign says only "
                          "which way masking the head moves it.")
    elif higher:
        mpos, mneg = ("the metric rises without the head", "#d95f02"), \
                     ("the metric drops without the head", "#1f5fa8")
        metric_reading = (f"Below 0, {metric_text} drops when the head is masked (the head helps the metric); "
                          "above 0 it rises. It is a statistic of the whole corpus (recomputed on every "
                          "resample), not a mean over pairs, so it is not comparable with the loss change above.")
    else:
        mpos, mneg = ("the metric worsens without the head", "#1f5fa8"), \
                     ("the metric improves without the head", "#d95f02")
        metric_reading = f"Above 0, {metric_text} worsens when the head is masked (lower is better)."
    metric_chart = fig(figures.signed_intervals(an.metric_change, an.metric_change_ci,
                                                y_title=f"change of {metric_short}", positive=mpos, negative=mneg,
                                                level=an.bootstrap_level),
                       point_links=figures.signed_interval_links(an.metric_change, an.metric_change_ci, links))
    gradient_map = fig(figures.head_values(an.gradient_layer_normalized, title="gradient, normalised per layer",
                                           signed=False), how_to_read="head_values")
    ranked = []
    for k, (l, h) in enumerate(an.importance_order()[:top_k]):
        ranked.append(RankedHead(
            k + 1, rel(doc, head_doc(l, h)), l, h, ctx.labels[l, h],
            ablation_effect=interval(an.ablation_effect, an.ablation_effect_ci, l, h),
            loss_change=interval(an.loss_change, an.loss_change_ci, l, h),
            metric_change=interval(an.metric_change, an.metric_change_ci, l, h),
            gradient=num(float(an.gradient_raw[l, h]), 4)))
    ranked_by = (f"by how much {metric_text} {'drops' if higher else 'worsens'} when the head alone is masked "
                 "(ties by the ablation effect)" if directed else
                 "by the ablation effect (the metric has no better direction)")
    ranked_title = (f"The {len(ranked)} heads whose masking hurts {metric_short} most" if directed else
                    f"The {len(ranked)} heads whose masking moves the loss most")
    flagged = sum(1 for r in ranked if r.metric_change.overlaps_zero)
    ranked_overlap = (f"{flagged} of these {len(ranked)} have a metric-change interval that contains zero."
                      if directed else "")
    n_loss = excluding_zero(an.loss_change_ci)
    n_metric = excluding_zero(an.metric_change_ci)
    excluding = (f"{n_loss} of {total} heads have a {level} interval of the loss change that excludes zero "
                 f"({helps} help, {hurts} hurt); for the other {total - n_loss} the data cannot tell the sign. "
                 f"{n_metric} of {total} heads have a metric-change interval that excludes zero.")
    return Ablation(
        loss_text=_LOSS_TEXT.get((an.objective, an.metric_name), "the pair's own loss"), metric_text=metric_text,
        ci_level=level, resamples=an.bootstrap_resamples, seed=acfg.seed, like_for_like=like_for_like,
        rank_correlation=an.rank_correlation, agreement=agreement_sentence(an.rank_correlation),
        loss_chart=loss_chart, intervals_how_to_read=HOW_TO_READ["intervals"], loss_reading=loss_reading,
        loss_excluding_zero=n_loss, loss_helps=helps, loss_hurts=hurts, metric_chart=metric_chart,
        metric_reading=metric_reading, metric_excluding_zero=n_metric, gradient_map=gradient_map, ranked=ranked,
        ranked_by=ranked_by, ranked_title=ranked_title, ranked_overlap_sentence=ranked_overlap,
        excluding_sentence=excluding)


def input_rows(an) -> list[InputRow]:
    """Every analysis that ran, with its input setting and the reason (``AnalysisResults.inputs``),
    in :data:`ANALYSIS_TITLES` order."""
    order = [n for n in ANALYSIS_TITLES if n in an.inputs] + [n for n in an.inputs if n not in ANALYSIS_TITLES]
    return [InputRow(ANALYSIS_TITLES.get(name, name), INPUT_TITLES.get(an.inputs[name]["input"],
                                                                      an.inputs[name]["input"]),
                     an.inputs[name]["reason"]) for name in order]


def input_summary(an) -> str:
    """One sentence: which input head importance read, against the joint pair the attention pages show."""
    used = an.inputs.get("importance")
    if used is None:
        return "The attention pages show the joint pair [CLS] a [SEP] b [SEP]."
    if used["input"] == "joint":
        return ("Head importance reads the same joint pair [CLS] a [SEP] b [SEP] that the attention pages show "
                "(analysis.input = joint).")
    return ("Head importance reads each sentence alone (analysis.input = separate), as the bi-encoder is used, "
            "while the attention pages show the joint pair [CLS] a [SEP] b [SEP]: a head's importance here says "
            "nothing about its attention to the other sentence.")


def head_map_text(an, pairs: int, seed: int, size: int) -> str:
    """Which pairs the head map averages over, in one or two sentences."""
    if an.head_map_pairs >= pairs:
        return (f"It averages over all {pairs} pairs of the corpus (fewer than analysis.head_map_pairs = {size}), "
                "whatever pair_pages says.")
    return (f"It averages over a random sample of {an.head_map_pairs} of the {pairs} pairs, drawn without "
            f"replacement with a fixed seed (analysis.seed = {seed}; analysis.head_map_pairs sets the size): the "
            "same sample whatever pair_pages says.")


def skipped_rows(an, names: tuple[str, ...] | None = None) -> list[SkippedRow]:
    """Every analysis that did not run (``AnalysisResults.skipped``), or those of ``names``, with the reason."""
    return [SkippedRow(ANALYSIS_TITLES.get(name, name), reason) for name, reason in an.skipped.items()
            if names is None or name in names]


def importance_page(ctx: SiteContext, doc: str, top_k: int = 10) -> ImportancePage:
    """The Importance page's view-model (figures in page order).

    Args:
        ctx: the site context; reads ``ctx.data.analysis`` (:class:`AnalysisResults`).
        doc: this page's docs path (links are relative to it).
        top_k: how many heads the ranked table lists (in :meth:`AnalysisResults.importance_order`).

    Returns:
        :class:`ImportancePage`; ``ablation`` is None when head masking did not run.
    """
    data, fig, an = ctx.data, Figures(doc), ctx.data.analysis
    acfg = ctx.cfg.raw.analysis
    ablation = _ablation(ctx, doc, fig, top_k) if an.ablation_effect is not None else None
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
    head_map = None
    if an.head_coords is not None:
        c = an.head_coords.reshape(data.layers, data.n_heads, 2)
        head_map = fig(figures.head_scatter(c[..., 0], c[..., 1], ctx.labels, x_title="MDS 1", y_title="MDS 2",
                                            equal_axes=True),
                       point_links=figures.scatter_links(ctx.labels, ctx.head_link_of(doc)), how_to_read="head_map")
    limit = f" of {an.objective_max_length} tokens" if an.objective_max_length else ""
    truncation = (f"The objective encodes each text up to the model's own limit{limit} (its learned "
                  "positions, or a sentence-transformers checkpoint's max_seq_length), not up to model.max_length = "
                  f"{ctx.max_length}, which bounds only the joint pairs the attention pages show.")
    return ImportancePage(
        objective_text=ctx.objective_text(), metric_name=an.metric_name,
        metric_title=_METRIC_SHORT.get(an.metric_name, an.metric_name), baseline=an.baseline,
        objective_pairs=an.objective_pairs, pairs=len(data.pairs),
        sample_text=_sample_text(an, len(data.pairs), acfg.objective_pairs), truncation_text=truncation,
        max_length=ctx.max_length, heads_total=ctx.n_heads_total, inputs=input_rows(an),
        input_summary=input_summary(an), skipped=skipped_rows(an),
        ablation=ablation, groups=groups, biggest=biggest, head_map=head_map, head_map_pairs=an.head_map_pairs,
        head_map_text=head_map_text(an, len(data.pairs), acfg.seed, acfg.head_map_pairs))
