"""The heads section's index (one sortable, filterable table of every head)
and the side-by-side page that puts two to four ticked heads next to each
other on the same pair."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from markupsafe import Markup

from generator import views
from generator.figures import escape_tokens
from generator.links import HEADS_COMPARE, HEADS_INDEX, head_doc, rel
from generator.budget import CATEGORIES
from generator.pages.common import Figures, SiteContext, num, pct
from generator.registry import LABEL_INFO, PATTERNS


@dataclass(frozen=True)
class HeadRow:
    layer: int
    head: int
    href: str
    label: str
    consistency: float | None
    scores: list[float | None]
    description: str
    budget_lead: str
    budget_lead_share: float | None
    effect: float | None
    effect_text: str
    effect_overlaps_zero: bool
    rank: int | None


@dataclass(frozen=True)
class HeadsTablePage:
    patterns: tuple[str, ...]
    has_importance: bool
    has_budget: bool
    effect_title: str
    rows: list[HeadRow]
    compare_href: str


@dataclass(frozen=True)
class HeadsComparePage:
    table_href: str
    view: Markup


def heads_table_page(ctx: SiteContext, doc: str) -> HeadsTablePage:
    """Every head in one table: label and description, consistency, the seven scores, the
    attention-budget category it spends most on and, when head masking ran, its importance rank
    and the signed mean change of the per-pair loss when it alone is masked, with its bootstrap
    interval (Michel et al. 2019, "Are Sixteen Heads Really Better than One?")."""
    data, an = ctx.data, ctx.data.analysis
    has_importance = an is not None and an.loss_change is not None
    rank = {lh: k + 1 for k, lh in enumerate(an.importance_order())} if has_importance else {}
    titles = {c.name: c.title for c in CATEGORIES}
    rows = []
    for h in data.heads:
        lead = max(h.budget, key=h.budget.get) if h.budget else None
        effect, text, overlaps = None, "", False
        if has_importance:
            effect = float(an.loss_change[h.layer, h.head])
            low, high = (float(x) for x in an.loss_change_ci[h.layer, h.head])
            overlaps = bool(an.loss_change_overlaps_zero[h.layer, h.head])
            text = f"{num(effect, 4)} [{num(low, 4)}, {num(high, 4)}]"
        rows.append(HeadRow(h.layer, h.head, rel(doc, head_doc(h.layer, h.head)), h.label, h.consistency,
                            [h.scores[p] for p in PATTERNS], h.description,
                            f"{titles[lead]} {pct(h.budget[lead])}" if lead else "",
                            h.budget[lead] if lead else None, effect, text, overlaps, rank.get((h.layer, h.head))))
    level = pct(an.bootstrap_level) if has_importance else ""
    return HeadsTablePage(PATTERNS, has_importance, bool(data.heads and data.heads[0].budget),
                          f"loss change masked [{level} CI]", rows, rel(doc, HEADS_COMPARE))


def comparison_pairs(ctx: SiteContext, k: int = 5) -> list[int]:
    """The ``k`` pairs used as an example by the most heads (ties by corpus order), among those whose
    attention the build kept and that are short enough for the all-heads views."""
    uses = Counter(i for h in ctx.data.heads for i in h.examples)
    kept = [i for i in ctx.data.showcase.attention if ctx.data.layouts[i].n <= ctx.view_max_tokens]
    return sorted(kept, key=lambda i: (-uses[i], i))[:k]


def heads_compare_page(ctx: SiteContext, doc: str) -> HeadsComparePage:
    """Data for the side-by-side view: every head's scores and label, and every head's attention on a
    few shared pairs (quantised as in the model view); the browser draws the ticked heads."""
    data, fig = ctx.data, Figures(doc)
    chosen = comparison_pairs(ctx)
    payload = {
        "patterns": list(PATTERNS), "thresholds": [ctx.thresholds[p] for p in PATTERNS],
        "layers": data.layers, "heads": data.n_heads,
        "colors": {name: info.color for name, info in LABEL_INFO.items()},
        "head_info": [{"layer": h.layer, "head": h.head, "label": h.label,
                       "scores": [None if h.scores[p] is None else round(h.scores[p], 4) for p in PATTERNS],
                       "href": rel(doc, head_doc(h.layer, h.head))} for h in data.heads],
        "pairs": [{"index": i, "id": escape_tokens([data.pairs[i].id])[0],
                   **views.head_view_data(data.showcase.attention[i], data.layouts[i])} for i in chosen],
    }
    return HeadsComparePage(rel(doc, HEADS_INDEX), fig.view("compareview", payload))
