"""The all-pairs page: the whole corpus as one table, written into the page
(so that the site's search finds every pair) and filtered, sorted and
paginated in the browser."""

from __future__ import annotations

from dataclasses import dataclass

from generator.pages.common import SiteContext, num

#: the column header of the model's own per-pair value of each objective
OBJECTIVE_COLUMN = {"similarity": "model similarity", "mlm": "model PLL", "classification": "model correct"}
#: what that value is, in words
OBJECTIVE_VALUE = {"similarity": "the cosine similarity of the two sentences' mean-pooled embeddings",
                   "mlm": "the pair's masked-LM pseudo-log-likelihood, in nats",
                   "classification": "1 when the classifier predicts the pair's gold label, else 0"}
#: how the similarity objective reads a pair (``analysis.input``)
SIMILARITY_INPUT = {"separate": "each sentence encoded alone, as a bi-encoder is used",
                    "joint": "the pair encoded once as [CLS] a [SEP] b [SEP], each sentence's own tokens pooled"}


@dataclass(frozen=True)
class CorpusRow:
    index: int
    id: str
    a: str
    b: str
    label: str
    model: str
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
    model_column: str | None
    model_note: str | None
    rows: list[CorpusRow]


def corpus_page(ctx: SiteContext, doc: str) -> CorpusPage:
    """Every pair with its gold ``label``, the model's own value of the analysis objective on it
    (e.g. the cosine similarity of its two sentences), the pattern most heads follow on it, and
    its page when it has one."""
    an = ctx.data.analysis
    has_model = an is not None and an.objective_values is not None
    rows = []
    for i, pair in enumerate(ctx.data.pairs):
        top, count = ctx.top_pattern(i)
        model = an.objective_value(i) if has_model else None
        rows.append(CorpusRow(i, pair.id, pair.a, pair.b, "" if pair.label is None else f"{pair.label:g}",
                              "" if model is None else num(model, 3), top, count, " ".join(pair.tags),
                              ctx.pair_link(doc, i)))
    note = None
    if has_model:
        note = f"{OBJECTIVE_COLUMN[an.objective].capitalize()}: {OBJECTIVE_VALUE[an.objective]}"
        if an.objective == "similarity":
            note += f" ({SIMILARITY_INPUT[ctx.cfg.raw.analysis.input]}; analysis.input)"
        note += ", with no head masked."
        if an.objective_pairs < len(ctx.data.pairs):
            note += (f" It was evaluated on an evenly spaced sample of {an.objective_pairs} of the "
                     f"{len(ctx.data.pairs)} pairs (analysis.objective_pairs); the other rows leave it empty.")
    return CorpusPage(pairs=len(ctx.data.pairs), with_page=len(ctx.pair_docs), pair_pages=ctx.cfg.raw.pair_pages,
                      meta=ctx.corpus_meta, model_column=OBJECTIVE_COLUMN[an.objective] if has_model else None,
                      model_note=note, rows=rows)
