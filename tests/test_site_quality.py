"""What a reader of the built site sees beyond the figures: the corpus table's
columns, the relocatable 404 page, the corpus-level metadata, the downloads.
Read from the built HTML and data files (no browser)."""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
from html import unescape

import pytest
import torch
import yaml
from transformers import AutoModel, AutoTokenizer

from generator.cli import run_build
from generator.config import DEFAULT_MODEL
from generator.model import resolve_model_path
from generator.registry import PATTERNS

from conftest import small_corpus_items, write_project


def corpus_rows(site) -> list[list[str]]:
    html = (site / "pairs" / "index.html").read_text(encoding="utf-8")
    body = html.split('<div class="atlas-corpus', 1)[1].split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    rows = []
    for tr in re.findall(r"<tr>(.*?)</tr>", body, re.S):
        rows.append([unescape(re.sub(r"<[^>]+>", "", td)).strip() for td in re.findall(r"<td[^>]*>(.*?)</td>", tr, re.S)])
    return rows


def test_corpus_table_shows_gold_label_and_the_models_similarity(built_site):
    """The 'model similarity' column equals the cosine of the two sentences'
    mean-pooled embeddings, each sentence encoded alone, computed here with
    transformers directly (an independent implementation)."""
    site = built_site["site"]
    html = (site / "pairs" / "index.html").read_text(encoding="utf-8")
    assert "<th>gold label</th><th>model similarity</th>" in html
    assert "each sentence encoded alone" in html
    items = small_corpus_items()
    rows = corpus_rows(site)
    assert len(rows) == len(items)
    path = resolve_model_path(DEFAULT_MODEL)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()

    def embed(text: str) -> torch.Tensor:
        enc = tok(text, return_tensors="pt", truncation=True, max_length=256)
        with torch.no_grad():
            hidden = model(**enc).last_hidden_state[0]
        return hidden.mean(0)

    for row, item in zip(rows, items):
        index, pair_id, a, b, gold, model_sim = row[:6]
        assert pair_id == item["id"] and a == item["a"] and b == item["b"]
        assert gold == ("" if item.get("label") is None else f"{item['label']:g}")
        want = torch.nn.functional.cosine_similarity(embed(item["a"]), embed(item["b"]), dim=0).item()
        assert float(model_sim) == pytest.approx(want, abs=1.5e-3), item["id"]


def test_pair_scores_download_has_every_pair_and_head(built_site, ctx):
    site = built_site["site"]
    written = (site / "data" / "pair_scores.csv.gz").read_bytes()
    # written by a process of its own (tests/conftest.py), byte for byte what the build's own process writes
    from generator.export import pair_scores_csv_gz
    assert written == pair_scores_csv_gz(ctx.data)
    raw = gzip.decompress(written).decode("utf-8")
    rows = list(csv.DictReader(io.StringIO(raw)))
    heads = json.loads((site / "data" / "heads.json").read_text(encoding="utf-8"))
    n_heads = heads["model"]["layers"] * heads["model"]["heads"]
    assert len(rows) == len(small_corpus_items()) * n_heads
    assert list(rows[0]) == ["pair", "id", "layer", "head", "label", *PATTERNS]
    # the corpus means of the per-pair scores are the heads' scores
    for h in heads["heads"][:5]:
        mine = [r for r in rows if int(r["layer"]) == h["layer"] and int(r["head"]) == h["head"]]
        for p in PATTERNS:
            values = [float(r[p]) for r in mine if r[p] != ""]
            if h["scores"][p] is not None:
                assert sum(values) / len(values) == pytest.approx(h["scores"][p], abs=2e-6)
    assert "data/pair_scores.csv.gz" in (site / "index.html").read_text(encoding="utf-8")


def test_404_page_is_relative_to_a_base_it_computes(built_site):
    html = (built_site["site"] / "404.html").read_text(encoding="utf-8")
    assert 'href="/assets' not in html and 'src="/assets' not in html
    config = json.loads(re.search(r'<script id="__config" type="application/json">(.*?)</script>', html, re.S).group(1))
    assert config["base"] == "" and not config["search"].startswith("/")
    assert html.index("document.write('<base href=") < html.index('id="__config"')


def test_a_corpus_with_metadata_shows_it_on_home_and_corpus_pages(tmp_path):
    items = small_corpus_items(3)
    folder = tmp_path / "meta"
    config = write_project(folder, items)
    corpus = {"name": "Three <pairs>", "description": "A tiny corpus for a test.", "source": "the shipped corpus",
              "license": "CC BY 4.0", "pairs": items}
    (folder / "content" / "corpus.yml").write_text(yaml.safe_dump(corpus, allow_unicode=True, sort_keys=False),
                                                   encoding="utf-8")
    run_build(config, progress=False)
    for page in ("index.html", "pairs/index.html"):
        html = (folder / "site" / page).read_text(encoding="utf-8")
        assert "Three &lt;pairs&gt;" in html and "<pairs>" not in html
        assert "CC BY 4.0" in html and "A tiny corpus for a test." in html


def test_methodology_defines_the_budget_and_counts_leading_heads(built_site):
    """The budget table lists the eleven categories in matching order, and
    its 'heads for which it leads' column is the argmax of heads.json's budgets."""
    from generator.budget import CATEGORY_NAMES

    site = built_site["site"]
    html = (site / "methodology" / "index.html").read_text(encoding="utf-8")
    table = html.split("heads for which it leads", 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr><td>(\d+)</td><td>.*?<code>(\w+)</code>.*?</td><td>.*?</td><td>(\d+) of (\d+)</td></tr>",
                      table, re.S)
    assert [name for _, name, _, _ in rows] == list(CATEGORY_NAMES)
    heads = json.loads((site / "data" / "heads.json").read_text(encoding="utf-8"))["heads"]
    lead = [max(CATEGORY_NAMES, key=lambda c: h["budget"][c]) for h in heads]
    for _, name, count, total in rows:
        assert int(count) == lead.count(name) and int(total) == len(heads)
    assert "split_special_tokens" in html and "BasicTokenizer" in html and "Abnar" in html


def test_corpus_table_is_spliced_in_after_mkdocs(built_site):
    """The corpus table bypasses Markdown and the search index (generator/fragments.py): the page
    holds it once, no marker is left, and the search index does not carry its rows."""
    site = built_site["site"]
    html = (site / "pairs" / "index.html").read_text(encoding="utf-8")
    assert html.count('<table class="atlas-corpus-table">') == 1 and "atlas-fragment" not in html
    assert html.index("<h1") < html.index('<table class="atlas-corpus-table">') < html.index("</article>")
    index = json.loads((site / "search" / "search_index.json").read_text(encoding="utf-8"))
    corpus_entries = [d for d in index["docs"] if d["location"].startswith("pairs/") and "p0" not in d["location"]]
    sentence = small_corpus_items()[1]["a"]
    assert corpus_entries and all(sentence not in d["text"] for d in corpus_entries)
    assert any(sentence in unescape(d["text"]) for d in index["docs"])  # its pair page is indexed
    assert len(corpus_rows(site)) == len(small_corpus_items())


def _dies(*args):
    """Stands in for the CSV writer in the export process: the process dies."""
    import os
    os._exit(1)


def test_pair_scores_written_here_when_the_export_process_dies(ctx, tmp_path, monkeypatch, caplog):
    import generator.site
    from generator.export import pair_scores_csv_gz

    monkeypatch.setattr(generator.site, "EXPORT_PROCESS_ROWS", 0)
    monkeypatch.setattr(generator.site, "pair_scores_csv_gz_of", _dies)
    docs = tmp_path / "docs"
    generator.site.render_docs(ctx.cfg, ctx.data, docs, tmp_path / "site")
    assert (docs / "data" / "pair_scores.csv.gz").read_bytes() == pair_scores_csv_gz(ctx.data)
    assert "stopped; writing it in the build's own process" in caplog.text
