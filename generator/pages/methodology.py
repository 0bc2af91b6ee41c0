"""The Methodology page: exact definitions, thresholds and why, model,
corpus and software versions."""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

from markupsafe import Markup

import numpy as np

from generator import figures, value_norms
from generator.budget import CATEGORIES
from generator.pages.common import Figures, SiteContext, pct
from generator.pages.importance import InputRow, input_rows
from generator.registry import LABEL_INFO, MIXED, REGISTRY


@dataclass(frozen=True)
class FormulaRow:
    name: str
    formula: str
    source: str


@dataclass(frozen=True)
class ThresholdRow:
    name: str
    threshold: float | None
    heads: int
    reason: str


@dataclass(frozen=True)
class BudgetRow:
    """One attention-budget category: its rank in the matching order, key,
    legend title, rule, and how many heads spend the largest share on it."""

    order: int
    name: str
    title: str
    rule: str
    colour: str
    leading_heads: int


@dataclass(frozen=True)
class MethodologyPage:
    formulas: list[FormulaRow]
    thresholds: list[ThresholdRow]
    mixed: ThresholdRow
    strip: Markup
    model_name: str
    model_type: str
    layers: int
    heads: int
    head_dim: int
    max_length: int
    truncated_count: int
    corpus_name: str
    pairs: int
    tokens: int
    versions: list[tuple[str, str]]
    budget: list[BudgetRow]
    heads_total: int
    sink_raw_min: str
    sink_keep_max: str
    sinks: int
    analysis_inputs: list[InputRow]
    objective_pairs: int | None


def software_versions() -> list[tuple[str, str]]:
    """``(package, version)`` of the atlas and the libraries that shape its numbers and pages."""
    from generator import __version__

    out = [("attention-atlas", __version__)]
    for name in ("torch", "transformers", "tokenizers", "plotly", "mkdocs-material"):
        try:
            out.append((name, version(name)))
        except PackageNotFoundError:
            out.append((name, "not installed"))
    return out


def methodology_page(ctx: SiteContext, doc: str) -> MethodologyPage:
    """The Methodology page's view-model."""
    data, fig = ctx.data, Figures(doc)
    mixed = LABEL_INFO[MIXED]
    lead = np.argmax(data.budget, axis=-1) if data.budget_sums is not None else None
    budget = [BudgetRow(k + 1, c.name, c.title, c.description, c.colour,
                        0 if lead is None else int((lead == k).sum())) for k, c in enumerate(CATEGORIES)]
    an = data.analysis
    inputs = [] if an is None else input_rows(an)
    return MethodologyPage(
        formulas=[FormulaRow(p.name, p.formula, p.source) for p in REGISTRY],
        thresholds=[ThresholdRow(p.name, ctx.thresholds[p.name], ctx.label_counts.get(p.name, 0), p.threshold_reason)
                    for p in REGISTRY],
        mixed=ThresholdRow(MIXED, None, ctx.label_counts.get(MIXED, 0), mixed.threshold_reason),
        strip=fig(figures.threshold_strip(ctx.head_scores, ctx.thresholds), how_to_read="strip"),
        model_name=data.model["name_or_path"], model_type=data.model["model_type"], layers=data.layers,
        heads=data.n_heads, head_dim=data.model["head_dim"], max_length=ctx.max_length,
        truncated_count=ctx.truncated_count, corpus_name=ctx.corpus_name, pairs=len(data.pairs), tokens=ctx.n_tokens,
        versions=software_versions(), budget=budget, heads_total=ctx.n_heads_total,
        sink_raw_min=pct(value_norms.SINK_RAW_MIN), sink_keep_max=pct(value_norms.SINK_KEEP_MAX),
        sinks=len(data.attention_sinks) if data.budget_sums is not None else 0, analysis_inputs=inputs,
        objective_pairs=None if an is None else an.objective_pairs)
