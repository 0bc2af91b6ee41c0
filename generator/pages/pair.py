"""A page per pair: its sentences and tokens, the model view and head view
of all heads, attention rollout (Abnar & Zuidema 2020), token attribution
(integrated gradients), perturbed masking (Wu et al. 2020), and every head's
label on this pair."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from markupsafe import Markup

from generator import figures, views
from generator.analysis.perturbed import word_units
from generator.links import head_doc, rel
from generator.pages.common import Figures, Link, PairText, SiteContext
from generator.pages.compare import PairCompareSection, pair_compare_section
from generator.pages.importance import INPUT_TITLES, SkippedRow
from generator.rollout import rollout

#: the per-pair analyses (``AnalysisResults.skipped`` names) and how a pair page names them
PER_PAIR_ANALYSES = {"attribution": "integrated gradients", "perturbed_masking": "perturbed masking"}


@dataclass(frozen=True)
class Token:
    position: int
    text: str
    css: str


@dataclass(frozen=True)
class AttributedToken:
    text: str
    style: str
    title: str


@dataclass(frozen=True)
class Attribution:
    """Integrated gradients of one pair: f(x) next to the baseline's f(x'),
    the how-to-read sentence, the completeness error and the input used."""

    n_steps: int
    tokens: list[AttributedToken]
    total: float
    value: float
    baseline_value: float
    difference: float
    relative_error: str
    how_to_read: str
    input: str
    input_reason: str


@dataclass(frozen=True)
class Impact:
    """Perturbed masking of one pair (whole words, Wu et al. 2020)."""

    layer: int
    words: int
    passes: int
    mask_token: str
    note: str | None
    impact: Markup
    mean_attention: Markup


@dataclass(frozen=True)
class Rollout:
    """Attention rollout of one pair with a layer slider (Abnar & Zuidema 2020)."""

    layers: int
    figure: Markup


@dataclass(frozen=True)
class HeadUsingPair:
    link: Link
    label: str


@dataclass(frozen=True)
class PairPage:
    index: int
    pair: PairText
    note: str | None
    gold_label: str | None
    tags: list[str]
    truncated: bool
    max_length: int
    n: int
    tokens: list[Token]
    views_shown: bool
    view_max_tokens: int
    heads_total: int
    model_view: Markup | None
    head_view: Markup | None
    rollout: Rollout | None
    attribution: Attribution | None
    impact: Impact | None
    skipped: list[SkippedRow]
    per_pair_note: str | None
    grid: Markup
    label_counts: list[tuple[str, int]]
    used_by: list[HeadUsingPair]
    compare: PairCompareSection | None = None


def attribution_style(attributions: np.ndarray, i: int) -> str:
    """CSS background of token ``i``: red raises the objective, blue lowers it,
    opacity = |attribution| / max |attribution| over the pair."""
    m = float(np.max(np.abs(attributions))) or 1.0
    v = float(attributions[i]) / m
    color = "214, 39, 40" if v >= 0 else "31, 95, 168"
    return f"background: rgba({color}, {abs(v):.3f})"


def pair_page(ctx: SiteContext, doc: str, index: int) -> PairPage:
    """The view-model of pair ``index``'s page (figures in page order)."""
    data, fig = ctx.data, Figures(doc)
    pair, layout = data.pairs[index], data.layouts[index]
    tokens = [Token(k, t, "special" if layout.special[k] else f"seg-{layout.segment[k]}")
              for k, t in enumerate(layout.tokens)]
    labels = ctx.pair_labels(index)
    model_view = head_view = None
    views_shown = layout.n <= ctx.view_max_tokens
    if views_shown:
        payload = views.head_view_data(data.showcase.attention[index], layout, head_labels=labels.tolist(),
                                       head_links=ctx.grid_links(doc))
        model_view = fig.view("modelview", payload)
        head_view = fig.view("headview", payload)
    tokens_shown = layout.tokens
    hover = figures.escape_tokens(tokens_shown)
    roll = rollout(data.showcase.attention[index])
    rollout_vm = Rollout(layers=roll.shape[0],
                         figure=fig(figures.rollout_heatmap(roll, tokens_shown), hover_tokens=hover,
                                    how_to_read="rollout"))
    an = data.analysis
    attribution = impact = None
    if an is not None and index in an.attributions:
        at = an.attributions[index]
        values = at["attributions"]
        used = an.inputs.get("attribution", {})
        attribution = Attribution(
            n_steps=at["n_steps"],
            tokens=[AttributedToken(t, attribution_style(values, k), "%.4f" % values[k])
                    for k, t in enumerate(at["tokens"])],
            total=at["total"], value=at["value"], baseline_value=at["baseline_value"],
            difference=at["value"] - at["baseline_value"], relative_error="%.1e" % at["relative_error"],
            how_to_read=at["how_to_read"], input=INPUT_TITLES.get(used.get("input"), used.get("input", "")),
            input_reason=used.get("reason", ""))
    if an is not None and index in an.impact:
        m = an.impact[index]
        zmax = float(np.nanmax(m)) if np.isfinite(m).any() else 1.0
        words = len(word_units(layout))
        impact = Impact(
            layer=an.impact_layer, words=words, passes=words ** 2, mask_token=an.impact_mask_token,
            note=an.impact_note,
            impact=fig(figures.attention_heatmap(np.nan_to_num(m), tokens_shown, size=320, zmax=zmax,
                                                 colorscale="Reds"), hover_tokens=hover, how_to_read="impact"),
            mean_attention=fig(figures.attention_heatmap(data.showcase.attention[index].mean(axis=(0, 1)),
                                                         tokens_shown, size=320), hover_tokens=hover,
                               how_to_read="attention"))
    skipped, per_pair_note = [], None
    if an is not None:
        skipped = [SkippedRow(title.capitalize(), an.skipped[name]) for name, title in PER_PAIR_ANALYSES.items()
                   if name in an.skipped]
        analysed = sorted(set(an.attributions) | set(an.impact))
        if len(skipped) < len(PER_PAIR_ANALYSES) and index not in analysed:
            ran = " and ".join(t for n, t in PER_PAIR_ANALYSES.items() if n not in an.skipped)
            per_pair_note = (f"{ran.capitalize()} ran on {len(analysed)} of the pairs: the untruncated ones "
                             f"that most heads use as examples (analysis.max_pairs = {ctx.cfg.raw.analysis.max_pairs}); this pair is "
                             "not among them.")
    grid = fig(figures.head_grid(labels, data.pair_scores[index]), links=ctx.grid_links(doc), how_to_read="grid")
    used_by = [HeadUsingPair(Link(rel(doc, head_doc(h.layer, h.head)), f"layer {h.layer}, head {h.head}"), h.label)
               for h in data.heads if index in h.examples]
    return PairPage(
        index=index, pair=ctx.pair_text(doc, index, link=False), note=pair.note,
        gold_label=None if pair.label is None else f"{pair.label:g}", tags=list(pair.tags),
        truncated=bool(data.truncated[index]), max_length=ctx.max_length, n=layout.n, tokens=tokens,
        views_shown=views_shown, view_max_tokens=ctx.view_max_tokens, heads_total=ctx.n_heads_total,
        model_view=model_view, head_view=head_view, rollout=rollout_vm, attribution=attribution, impact=impact,
        skipped=skipped, per_pair_note=per_pair_note, grid=grid,
        label_counts=ctx.count_labels(labels), used_by=used_by, compare=pair_compare_section(ctx, doc, fig, index))
