"""The all-pairs page: the whole corpus as one searchable, paginated table."""

from __future__ import annotations

from dataclasses import dataclass

from markupsafe import Markup

from generator.figures import json_for_script
from generator.pages.common import SiteContext


@dataclass(frozen=True)
class CorpusPage:
    pairs: int
    rows_json: Markup


def corpus_page(ctx: SiteContext, doc: str) -> CorpusPage:
    """The table's rows travel as inert JSON (``<``, ``>``, ``&`` escaped), filtered in the browser."""
    rows = []
    for i, pair in enumerate(ctx.data.pairs):
        top, count = ctx.top_pattern(i)
        rows.append({"index": i, "id": pair.id, "a": pair.a, "b": pair.b, "top": top, "heads": count,
                     "tags": " ".join(pair.tags), "href": ctx.pair_link(doc, i)})
    return CorpusPage(pairs=len(ctx.data.pairs), rows_json=Markup(json_for_script(rows)))
