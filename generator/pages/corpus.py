"""The all-pairs page: the whole corpus as one table, written into the page
(so that the site's search finds every pair) and filtered, sorted and
paginated in the browser."""

from __future__ import annotations

from dataclasses import dataclass

from generator.pages.common import SiteContext


@dataclass(frozen=True)
class CorpusRow:
    index: int
    id: str
    a: str
    b: str
    label: str
    top: str
    heads: int
    tags: str
    href: str | None


@dataclass(frozen=True)
class CorpusPage:
    pairs: int
    with_page: int
    pair_pages: str
    meta: dict[str, str]
    rows: list[CorpusRow]


def corpus_page(ctx: SiteContext, doc: str) -> CorpusPage:
    """Every pair with its gold ``label``, the pattern most heads follow on it, and its page when it has one."""
    rows = []
    for i, pair in enumerate(ctx.data.pairs):
        top, count = ctx.top_pattern(i)
        rows.append(CorpusRow(i, pair.id, pair.a, pair.b, "" if pair.label is None else f"{pair.label:g}", top, count, " ".join(pair.tags),
                              ctx.pair_link(doc, i)))
    return CorpusPage(pairs=len(ctx.data.pairs), with_page=len(ctx.pair_docs), pair_pages=ctx.cfg.raw.pair_pages,
                      meta=ctx.corpus_meta, rows=rows)
