"""One typed view-model per page kind, built in Python with its figures
already rendered; the Jinja templates only format them.

:func:`site_pages` is the list of pages a build writes: each page kind
(home, methodology, pattern, layer, head, importance, corpus, pair) is named
once here, with its docs path, its template, its navigation title and the
function that builds its view-model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from generator.config import slug
from generator.links import (CORPUS, HEADS_COMPARE, HEADS_INDEX, HOME, IMPORTANCE, METHODOLOGY, head_doc, layer_doc,
                             pattern_doc)
from generator.pages.common import SiteContext
from generator.pages.compare import COMPARE, compare_page
from generator.pages.corpus import corpus_page
from generator.pages.head import head_page
from generator.pages.heads import heads_compare_page, heads_table_page
from generator.pages.home import home_page
from generator.pages.importance import importance_page
from generator.pages.layer import layer_page
from generator.pages.methodology import methodology_page
from generator.pages.pair import pair_page
from generator.pages.pattern import pattern_page
from generator.registry import LABEL_INFO, LABELS


@dataclass(frozen=True)
class Page:
    """One page of the site.

    Attributes:
        doc: its docs path (``heads/layer-00-head-01.md``).
        template: the Jinja template that formats its view-model.
        title: its title in the navigation.
        view_model: builds the page's view-model (called once, when the page is rendered).
    """

    doc: str
    template: str
    title: str
    view_model: Callable[[], object]


def site_pages(ctx: SiteContext) -> list[Page]:
    """Every page of the site, in navigation order."""
    data = ctx.data
    pages = [Page(HOME, "index.md.j2", "Home", lambda: home_page(ctx, HOME)),
             Page(METHODOLOGY, "methodology.md.j2", "Methodology", lambda: methodology_page(ctx, METHODOLOGY))]
    for pattern in LABELS:
        doc = pattern_doc(pattern)
        pages.append(Page(doc, "pattern.md.j2", LABEL_INFO[pattern].title,
                          lambda doc=doc, pattern=pattern: pattern_page(ctx, doc, pattern)))
    for layer in range(data.layers):
        doc = layer_doc(layer)
        pages.append(Page(doc, "layer.md.j2", f"Layer {layer}", lambda doc=doc, layer=layer: layer_page(ctx, doc, layer)))
        for head in range(data.n_heads):
            doc = head_doc(layer, head)
            pages.append(Page(doc, "head.md.j2", f"Head {layer}-{head} · {data.head(layer, head).label}",
                              lambda doc=doc, layer=layer, head=head: head_page(ctx, doc, layer, head)))
    pages.append(Page(HEADS_INDEX, "heads.md.j2", "All heads", lambda: heads_table_page(ctx, HEADS_INDEX)))
    pages.append(Page(HEADS_COMPARE, "heads_compare.md.j2", "Side by side", lambda: heads_compare_page(ctx, HEADS_COMPARE)))
    an = data.analysis
    if an is not None and (an.ablation is not None or an.groups):
        pages.append(Page(IMPORTANCE, "importance.md.j2", "Importance", lambda: importance_page(ctx, IMPORTANCE)))
    if data.compare is not None:
        pages.append(Page(COMPARE, "compare.md.j2", "What fine-tuning changed", lambda: compare_page(ctx, COMPARE)))
    pages.append(Page(CORPUS, "corpus.md.j2", "All pairs", lambda: corpus_page(ctx, CORPUS)))
    for index, doc in ctx.pair_docs.items():
        pages.append(Page(doc, "pair.md.j2", f"p{index:0{ctx.width}d} · {slug(data.pairs[index].id, 40)}",
                          lambda doc=doc, index=index: pair_page(ctx, doc, index)))
    return pages


def navigation(pages: list[Page], layers: int, heads: int) -> list:
    """MkDocs' ``nav``: Home, Patterns, Layers (each with its heads), Heads (table, side by side), Pairs,
    Importance, Methodology.

    Pair pages are reached from the corpus table and the head pages; listing
    them in the navigation would repeat every pair on every page.
    """
    by_doc = {p.doc: p for p in pages}
    nav: list = [{"Home": HOME}]
    nav.append({"Patterns": [{by_doc[pattern_doc(p)].title: pattern_doc(p)} for p in LABELS]})
    nav.append({"Layers": [
        {f"Layer {layer}": [{"Layer overview": layer_doc(layer)},
                            *({by_doc[head_doc(layer, h)].title: head_doc(layer, h)} for h in range(heads))]}
        for layer in range(layers)]})
    nav.append({"Heads": [{"All heads": HEADS_INDEX}, {"Side by side": HEADS_COMPARE}]})
    nav.append({"Pairs": CORPUS})
    if IMPORTANCE in by_doc:
        nav.append({"Importance": IMPORTANCE})
    if COMPARE in by_doc:
        nav.append({by_doc[COMPARE].title: COMPARE})
    nav.append({"Methodology": METHODOLOGY})
    return nav
