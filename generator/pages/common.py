"""What every page's view-model shares: number formatting, figure embedding,
the site-wide derived data (:class:`SiteContext`) and small value types.

Corpus text is untrusted: view-models carry it as plain ``str`` and the
autoescaping templates escape it; only figure markup (whose JSON is escaped
by :func:`generator.figures.json_for_script`) is :class:`~markupsafe.Markup`.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass

import numpy as np
from markupsafe import Markup

from generator import figures
from generator.budget import CATEGORIES, CATEGORY_NAMES
from generator.config import Config, load_corpus_meta, slug
from generator.describe import percent
from generator.links import head_doc, pair_doc, rel
from generator.patterns import classify_all
from generator.pipeline import AtlasData
from generator.registry import LABELS, MIXED


# ------------------------------------------------------------------ formatting

def num(value, digits: int = 2) -> str:
    """``value`` with ``digits`` decimals; ``n/a`` for ``None`` or NaN."""
    if value is None or (isinstance(value, (float, np.floating)) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def pct(value) -> str:
    """A share in [0, 1] as a whole percentage; ``n/a`` for ``None``."""
    return "n/a" if value is None else f"{100 * value:.0f}%"


# --------------------------------------------------------------------- figures

#: One line under each kind of figure saying how to read it.
HOW_TO_READ = {
    "attention": "How to read: row i is query token i (the one attending), column j key token j (the one "
                 "attended to); a cell's colour is the share of row i's attention that goes to j (each row sums "
                 "to 1). Hover a cell for the two tokens; the toolbar saves the figure (PNG, SVG) or its numbers.",
    "grid": "How to read: one cell per head (row = layer, column = head, both from 0), coloured by its label; "
            "hover for the numbers, click to open the head.",
    "scores": "How to read: one bar per pattern, the head's corpus-mean score; the black tick is that "
              "pattern's threshold. A bar above its tick qualifies; the label goes to the largest score / threshold.",
    "counts": "How to read: bar heights are numbers of heads.",
    "strip": "How to read: one dot per head and pattern (its corpus-mean score); the black bar is the threshold.",
    "head_map": "How to read: one point per head; nearby heads attend alike (Jensen-Shannon distance, "
                "laid out in 2-D by multidimensional scaling: only distances mean something, not the axes).",
    "head_values": "How to read: one cell per head (row = layer, column = head), its value printed in the cell.",
    "scatter": "How to read: one point per head, coloured by its label; click a point to open the head.",
    "headview": "How to read: lines run from each query token (left) to the key tokens it attends to (right), "
                "darker for more attention; click a token to keep only its lines (the URL then keeps the view).",
    "modelview": "How to read: one thumbnail per head (row = layer, column = head), each that head's attention "
                 "matrix on this pair (rows = query, columns = key, darker = more).",
    "qkview": "How to read: pick a query token; the left panels show its query vector, every key vector and "
              "their element-wise product per dimension, the bars the dot product, its scaled value and the "
              "softmax, which is the head's attention.",
    "impact": "How to read: row i, column j is how much masking the word of token j changes the representation "
              "of the word of token i (every piece of a word shares its row and column; larger = darker); it is not "
              "normalised per row like attention.",
    "intervals": "How to read: one point per head, sorted from the most negative to the most positive; the bar "
                 "through it is its bootstrap interval. Grey heads' intervals contain 0: the data cannot tell whether "
                 "masking them changes anything. Hover for the numbers, click a point to open the head.",
    "budget": "How to read: each bar splits the attention of the query tokens into eleven categories (an exact "
              "partition: every key falls in the first category that matches, the shares sum to 100%).",
    "compareview": "How to read: one column per ticked head; its scores against the thresholds (black ticks), "
                   "then its attention on the chosen pair (rows = query, columns = key, darker = more).",
    "rollout": "How to read: row i is position i after the chosen layer, column j input token j; a cell is the "
               "share of position i's representation that traces back to token j through the attention and the "
               "residual connections. Move the slider to go through the layers.",
}


class Figures:
    """Embeds the figures of one page; ids are stable (page + position), so
    two builds of the same input write the same bytes. Call it in the order
    the figures appear on the page."""

    def __init__(self, page: str):
        self.prefix = "fig-" + slug(page.replace("/", "-").removesuffix(".md"), 60)
        self.count = 0
        self._view_specs: dict[int, tuple[dict, str]] = {}  # id(payload) -> (payload, its script's id)

    def __call__(self, fig, css: str = "", how_to_read: str | None = None, **extra) -> Markup:
        """A Plotly figure: a placeholder ``div`` plus its JSON (rendered by ``assets/atlas.js``) and,
        when given, a :data:`HOW_TO_READ` key whose line goes under the figure."""
        self.count += 1
        fid = f"{self.prefix}-{self.count}"
        payload = figures.embed_json(fig, **extra)
        return Markup(
            f'<div class="atlas-figure {css}" id="{fid}" data-spec="{fid}-spec"></div>\n'
            f'<script type="application/json" id="{fid}-spec">{payload}</script>'
        ) + _how_to_read(how_to_read)

    def view(self, kind: str, payload: dict) -> Markup:
        """An interactive view (``headview``, ``modelview``, ``qkview``) of ``assets/views.js``, with
        its how-to-read line. Views given the same ``payload`` object (a pair's model view and head
        view) share one JSON copy of it: the later ones point at the first one's script."""
        self.count += 1
        vid = f"{self.prefix}-{kind}-{self.count}"
        shared = self._view_specs.get(id(payload))
        if shared is not None:
            return Markup(f'<div class="atlas-{kind}" id="{vid}" data-spec="{shared[1]}"></div>') + _how_to_read(kind)
        self._view_specs[id(payload)] = (payload, f"{vid}-spec")
        return Markup(
            f'<div class="atlas-{kind}" id="{vid}" data-spec="{vid}-spec"></div>\n'
            f'<script type="application/json" id="{vid}-spec">{figures.json_for_script(payload)}</script>'
        ) + _how_to_read(kind)


def _how_to_read(kind: str | None) -> Markup:
    if kind is None:
        return Markup("")
    return Markup('\n<p class="atlas-howto">') + HOW_TO_READ[kind] + Markup("</p>")


# ----------------------------------------------------------------- value types

@dataclass(frozen=True)
class Link:
    """A relative ``href`` and the text that shows it."""

    href: str
    text: str


@dataclass(frozen=True)
class PairText:
    """A pair as a page shows it (untrusted text, escaped by the template)."""

    index: int
    id: str
    a: str
    b: str
    title: str | None
    href: str | None


@dataclass(frozen=True)
class HeadCard:
    """A head's card in a gallery: link, title, label, thumbnail, one line of numbers."""

    href: str
    title: str
    label: str
    thumb: Markup | None
    summary: str
    #: the head's one-sentence description (:func:`generator.describe.describe_head`).
    description: str = ""


# ---------------------------------------------------------------- site context

class SiteContext:
    """Site-wide facts derived once from :class:`AtlasData` and the config
    (labels grid, pair pages, counts), shared by every page's view-model."""

    def __init__(self, cfg: Config, data: AtlasData):
        self.cfg, self.data = cfg, data
        self.width = max(4, len(str(len(data.pairs) - 1)))
        self.head_scores = data.sums.mean()
        self.labels = np.array([[data.head(l, h).label for h in range(data.n_heads)] for l in range(data.layers)],
                               dtype=object)
        self.pair_docs = {i: pair_doc(i, data.pairs[i].id, self.width) for i in sorted(data.showcase.attention)}
        self.thresholds = data.thresholds
        self.corpus_name = os.path.relpath(cfg.corpus_path, cfg.path.resolve().parent)
        self.truncated_count = int(sum(data.truncated))
        self.label_counts = Counter(h.label for h in data.heads)
        self.n_tokens = sum(layout.n for layout in data.layouts)
        self.max_length = cfg.raw.model.max_length
        self.view_max_tokens = cfg.raw.view_max_tokens
        self.corpus_meta = load_corpus_meta(cfg.corpus_path).shown()

    @property
    def n_heads_total(self) -> int:
        return self.data.layers * self.data.n_heads

    def grid_links(self, from_doc: str) -> list[list[str]]:
        """``[layers][heads]`` relative links to the head pages."""
        return [[rel(from_doc, head_doc(l, h)) for h in range(self.data.n_heads)] for l in range(self.data.layers)]

    def head_link_of(self, from_doc: str):
        """``(layer, head) -> relative link`` from ``from_doc``."""
        return lambda l, h: rel(from_doc, head_doc(l, h))

    def pair_link(self, from_doc: str, index: int) -> str | None:
        """Relative link to a pair's page, ``None`` when the pair has none."""
        doc = self.pair_docs.get(index)
        return rel(from_doc, doc) if doc else None

    def pair_text(self, from_doc: str, index: int, link: bool = True) -> PairText:
        pair = self.data.pairs[index]
        return PairText(index=index, id=pair.id, a=pair.a, b=pair.b, title=pair.title,
                        href=self.pair_link(from_doc, index) if link else None)

    def pair_labels(self, index: int) -> np.ndarray:
        """``[layers, heads]`` labels of every head on one pair (its scores on that pair alone)."""
        return classify_all(self.data.pair_scores[index], self.thresholds)

    @staticmethod
    def count_labels(labels: np.ndarray) -> list[tuple[str, int]]:
        """``(label, heads)`` for the labels present, in :data:`LABELS` order."""
        counts = Counter(labels.reshape(-1).tolist())
        return [(name, counts[name]) for name in LABELS if counts.get(name)]

    def top_pattern(self, index: int) -> tuple[str, int]:
        """The label most heads give this pair (``mixed`` only if nothing else), and its head count."""
        counts = Counter(self.pair_labels(index).reshape(-1).tolist())
        named = [(c, name) for name, c in counts.items() if name != MIXED]
        if named:
            c, name = max(named, key=lambda t: (t[0], -LABELS.index(t[1])))
            return name, c
        return MIXED, counts.get(MIXED, 0)

    def head_card(self, from_doc: str, layer: int, head: int, fig: Figures, show_layer: bool = False) -> HeadCard:
        """A head's gallery card; its thumbnail is the head's attention on its best example."""
        h = self.data.head(layer, head)
        ex = h.examples[0] if h.examples else None
        thumb = None
        if ex is not None and ex in self.data.showcase.attention:
            thumb = fig(figures.attention_heatmap(self.data.showcase.attention[ex][layer, head],
                                                  self.data.layouts[ex].tokens, size=150, ticks=False),
                        css="thumb", static=True)
        if h.label != MIXED:
            summary = f"{h.label} {num(h.scores[h.label])} · consistency {pct(h.consistency)}"
        else:
            p = h.example_pattern
            summary = (f"closest pattern {p} {num(h.scores[p])}, under its threshold {num(self.thresholds[p])} · "
                       f"consistency {pct(h.consistency)}")
        title = f"Layer {layer}, head {head}" if show_layer else f"Head {head}"
        return HeadCard(href=rel(from_doc, head_doc(layer, head)), title=title, label=h.label, thumb=thumb,
                        summary=summary, description=h.description)

    def objective_text(self) -> str:
        """One line naming the analyses' objective and its corpus metric."""
        an = self.data.analysis
        what = {"similarity": "cosine similarity of the two sentences' mean-pooled embeddings",
                "mlm": "masked-LM pseudo-log-likelihood", "classification": "sequence-classification accuracy"}
        metric = {"spearman": "Spearman correlation with the pairs' labels",
                  "mean_similarity": "mean similarity (the pairs have no labels, so no better or worse)",
                  "pll_per_token": "pseudo-log-likelihood per token", "accuracy": "accuracy"}
        return (f"{an.objective}: {what.get(an.objective, an.objective)}; "
                f"metric {metric.get(an.metric_name, an.metric_name)}")


# ---------------------------------------------------------------------- budget

#: ``(name, title, colour)`` of the eleven attention-budget categories in first-match order
#: (:data:`generator.budget.CATEGORIES`): the legend of every budget figure.
BUDGET_LEGEND: list[tuple[str, str, str]] = [(c.name, c.title, c.colour) for c in CATEGORIES]

#: A few letters per budget category: the secondary mark of a ``mixed`` cell in the layers x heads grid.
BUDGET_MARK: dict[str, str] = {
    "self": "self", "cls": "CLS", "sep": "SEP", "word_pieces": "word", "previous": "prev", "next": "next",
    "copies": "copy", "copies_other_sentence": "copy⇄", "punctuation": "punct", "own_sentence": "own",
    "other_sentence": "other",
}


def leading_category(shares: dict[str, float]) -> str:
    """The budget category with the largest share (the first in :data:`generator.budget.CATEGORIES`
    order on a tie).

    Args:
        shares: category name -> share, e.g. :attr:`generator.scoring.HeadSummary.budget`.
    Returns:
        the category's name.
    Raises:
        ValueError: when ``shares`` is empty (no budget was computed).
    """
    if not shares:
        raise ValueError("leading_category: the head has no attention budget")
    return max(CATEGORY_NAMES, key=lambda c: (shares.get(c, 0.0), -CATEGORY_NAMES.index(c)))


def budget_text(shares: dict[str, float], top: int = 3) -> str:
    """The ``top`` largest budget shares as one line, e.g. ``"[CLS] 48% · own sentence 31% · [SEP] 9%"``.

    Args:
        shares: category name -> share in [0, 1].
        top: how many categories to name (largest first, :data:`generator.budget.CATEGORIES` order on ties).
    Returns:
        the line (category titles from :data:`generator.budget.CATEGORIES`).
    """
    titles = {c.name: c.title for c in CATEGORIES}
    order = sorted(CATEGORY_NAMES, key=lambda c: (-shares.get(c, 0.0), CATEGORY_NAMES.index(c)))[:top]
    return " · ".join(f"{titles[c]} {percent(shares.get(c, 0.0))}" for c in order)
