"""Config and corpus validation: every user error names the file, the line,
the pair (index and id) and the field; the CLI prints it without a traceback
and exits 2; a failing build leaves the previous site alone. Also slug()
safety and the JSON embedded in pages."""

from __future__ import annotations

import html
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import write_project
from generator import yamlio
from generator.config import PATTERNS, Pair, load_config, load_corpus, load_corpus_meta, slug, with_overrides
from generator.errors import AtlasError
from generator.figures import escape_tokens, json_for_script

ROOT = Path(__file__).resolve().parent.parent
VENV_PY = ROOT / ".venv" / "bin" / "python"
PYTHON = str(VENV_PY) if VENV_PY.exists() else sys.executable

GOOD_PAIR = '- id: p0\n  a: "Hello there."\n  b: "General Kenobi."\n'


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def config_error(tmp_path: Path, text: str) -> tuple[Path, str]:
    path = write(tmp_path, "site_config.yml", text)
    with pytest.raises(AtlasError) as info:
        load_config(path)
    return path, str(info.value)


def corpus_error(tmp_path: Path, text: str) -> tuple[Path, str]:
    path = write(tmp_path, "content/corpus.yml", text)
    with pytest.raises(AtlasError) as info:
        load_corpus(path)
    return path, str(info.value)


# ------------------------------------------------------------- valid input


def test_valid_project_loads(tmp_path):
    cfg_path = write_project(tmp_path, [{"id": "p0", "a": "Hi.", "b": "Yo."}])
    cfg = load_config(cfg_path)
    assert cfg.corpus_path == (tmp_path / "content" / "corpus.yml").resolve()
    assert cfg.site_dir == (tmp_path / "site").resolve()
    assert cfg.build_dir == (tmp_path / "build").resolve()
    assert list(cfg.thresholds) == list(PATTERNS)
    assert cfg.raw.compute.batch_size == 8 and cfg.raw.compute.device == "cpu"
    pairs = load_corpus(cfg.corpus_path)
    assert pairs == [Pair(id="p0", a="Hi.", b="Yo.")]


def test_empty_config_file_means_defaults(tmp_path):
    write(tmp_path, "content/corpus.yml", GOOD_PAIR)
    cfg = load_config(write(tmp_path, "site_config.yml", "# nothing set\n"))
    assert cfg.raw.examples_per_head == 3 and cfg.thresholds["same_word"] == 0.7


# ------------------------------------------------------------- config errors


def test_config_unknown_key_top_level_and_nested(tmp_path):
    path, msg = config_error(tmp_path, "site:\n  title: T\ncolour: red\n")
    assert msg == (f"{path}:3: field 'colour': unknown key (check the spelling; allowed keys are listed "
                   "in the README)")
    path, msg = config_error(tmp_path, "site:\n  title: T\n  titel: U\n")
    assert msg.startswith(f"{path}:3: field 'site.titel': unknown key")


def test_config_wrong_type_batch_size(tmp_path):
    path, msg = config_error(tmp_path, "model:\n  max_length: 64\ncompute:\n  batch_size: many\n")
    assert msg == f"{path}:4: field 'compute.batch_size': Input should be a valid integer"


def test_config_bool_is_not_an_integer(tmp_path):
    path, msg = config_error(tmp_path, "compute:\n  batch_size: true\n")
    assert msg == f"{path}:2: field 'compute.batch_size': Input should be a valid integer"


@pytest.mark.parametrize("value, words", [("1.5", "less than or equal to 1"),
                                          ("-0.1", "greater than or equal to 0"),
                                          (".nan", "")])
def test_config_threshold_outside_unit_interval(tmp_path, value, words):
    path, msg = config_error(tmp_path, f"thresholds:\n  next: 0.5\n  broad: {value}\n")
    assert msg.startswith(f"{path}:3: field 'thresholds.broad': ")
    assert words in msg


def test_config_examples_per_head_zero(tmp_path):
    path, msg = config_error(tmp_path, "examples_per_head: 0\n")
    assert msg == f"{path}:1: field 'examples_per_head': Input should be greater than or equal to 1"


def test_config_device_tpu(tmp_path):
    path, msg = config_error(tmp_path, "compute:\n  batch_size: 4\n  device: tpu\n")
    assert msg == f"{path}:3: field 'compute.device': Input should be 'auto', 'cpu' or 'cuda'"


def test_config_reports_every_error_at_once(tmp_path):
    path, msg = config_error(tmp_path, "colour: red\ncompute:\n  device: tpu\nexamples_per_head: 0\n")
    lines = msg.splitlines()
    assert len(lines) == 3
    assert f"{path}:1: field 'colour'" in msg
    assert f"{path}:3: field 'compute.device'" in msg
    assert f"{path}:4: field 'examples_per_head'" in msg


def test_config_not_a_mapping(tmp_path):
    path, msg = config_error(tmp_path, "- a\n- b\n")
    assert msg.startswith(f"{path}:1: the config file must be a mapping")


def test_config_missing_file(tmp_path):
    with pytest.raises(AtlasError, match=re.escape(f"{tmp_path / 'nope.yml'}: config file not found")):
        load_config(tmp_path / "nope.yml")


def test_config_yaml_syntax_error_has_line(tmp_path):
    path, msg = config_error(tmp_path, "site:\n  title: T\n  bad: value: other\nmodel: {}\n")
    assert msg == f"{path}:3: YAML error in config file: mapping values are not allowed here"


def test_config_yaml_alias_refused(tmp_path):
    path, msg = config_error(tmp_path, "site:\n  title: &t Atlas\n  description: *t\n")
    assert msg == f"{path}:3: YAML error in config file: YAML aliases (*name) are not allowed in atlas files"


def test_config_not_utf8(tmp_path):
    path = tmp_path / "site_config.yml"
    path.write_bytes(b"site:\n  title: caf\xe9\n")
    with pytest.raises(AtlasError, match=re.escape(f"{path}: config file is not UTF-8")):
        load_config(path)


@pytest.mark.parametrize("url", ["ftp://example.org/", "example.org", "javascript:alert(1)", "https://",
                                 "https://exa mple.org/", "//example.org/"])
def test_config_site_url_must_be_http(tmp_path, url):
    path, msg = config_error(tmp_path, f"site:\n  title: T\n  site_url: {json.dumps(url)}\n")
    assert msg == (f"{path}:3: field 'site.site_url': Value error, must be an http(s) URL such as "
                   "https://user.github.io/repo/")


@pytest.mark.parametrize("url", ["https://user.github.io/repo/", "http://localhost:8000", "https://x.org"])
def test_config_site_url_accepted(tmp_path, url):
    write(tmp_path, "content/corpus.yml", GOOD_PAIR)
    cfg = load_config(write(tmp_path, "site_config.yml", f"site:\n  site_url: {url}\n"))
    assert cfg.raw.site.site_url == url


def test_config_site_url_with_trailing_newline_refused(tmp_path):
    # a YAML block scalar ("site_url: |") ends with a newline
    config_error(tmp_path, "site:\n  site_url: |\n    https://x.org/\n")


def test_output_site_dir_inside_content(tmp_path):
    path, msg = config_error(tmp_path, "corpus: content/corpus.yml\noutput:\n  site_dir: content/site\n")
    content = (tmp_path / "content").resolve()
    assert msg == (f"{path}:3: field 'output.site_dir': {content / 'site'} is inside the content folder "
                   f"{content}; generated files must not mix with sources")


def test_output_build_dir_is_project_root(tmp_path):
    path, msg = config_error(tmp_path, "output:\n  build_dir: .\n")
    assert msg.startswith(f"{path}:2: field 'output.build_dir': {tmp_path.resolve()} contains the project's sources")


def test_output_dirs_nested(tmp_path):
    path, msg = config_error(tmp_path, "output:\n  build_dir: out\n  site_dir: out/site\n")
    assert msg == f"{path}:2: output.site_dir and output.build_dir must be separate folders"


def test_site_dir_override_inside_content_refused(tmp_path):
    cfg = load_config(write_project(tmp_path, [{"id": "p0", "a": "x", "b": "y"}]))
    with pytest.raises(AtlasError, match="field 'output.site_dir': .* is inside the content folder"):
        with_overrides(cfg, site_dir=tmp_path / "content" / "out")


# -------------------------------------------------------------- YAML size


def test_yaml_over_size_limit_refused_before_parsing(tmp_path, monkeypatch):
    monkeypatch.setattr(yamlio, "MAX_YAML_BYTES", 1024 * 1024)

    def no_parsing(*args, **kwargs):
        raise AssertionError("the file was parsed")

    monkeypatch.setattr(yamlio, "_NoAliasLoader", no_parsing)
    path = tmp_path / "corpus.yml"
    # 1.5 MiB of broken YAML: a parse would fail differently (or be caught above)
    path.write_bytes(b"- id: [unclosed\n" + b"#" * (3 * 2**19))
    with pytest.raises(AtlasError) as info:
        load_corpus(path)
    assert str(info.value) == (f"{path}: corpus file is 1,572,880 bytes, over the limit of 1,048,576 bytes (1 MiB); "
                               "split the corpus or raise generator.yamlio.MAX_YAML_BYTES")


def test_yaml_at_size_limit_accepted(tmp_path, monkeypatch):
    path = write(tmp_path, "corpus.yml", GOOD_PAIR)
    monkeypatch.setattr(yamlio, "MAX_YAML_BYTES", path.stat().st_size)
    assert [p.id for p in load_corpus(path)] == ["p0"]
    monkeypatch.setattr(yamlio, "MAX_YAML_BYTES", path.stat().st_size - 1)
    with pytest.raises(AtlasError, match="over the limit"):
        load_corpus(path)


# ------------------------------------------------------------- corpus errors


def test_pair_unknown_key(tmp_path):
    path, msg = corpus_error(tmp_path, GOOD_PAIR + "- id: p1\n  a: x\n  b: y\n  colour: red\n")
    assert msg == (f"{path}:7: pair 1 (id 'p1'), field 'colour': unknown key (check the spelling; allowed keys "
                   "are listed in the README)")


@pytest.mark.parametrize("missing", ["a", "b"])
def test_pair_missing_sentence(tmp_path, missing):
    other = "b" if missing == "a" else "a"
    path, msg = corpus_error(tmp_path, GOOD_PAIR + f"- id: p1\n  title: T\n  {other}: x\n")
    assert msg == f"{path}:4: pair 1 (id 'p1'), field '{missing}': required field is missing"


@pytest.mark.parametrize("value", ['""', '"   "', '"\\x01\\x02"'])
def test_pair_empty_sentence(tmp_path, value):
    path, msg = corpus_error(tmp_path, GOOD_PAIR + f"- id: p1\n  a: {value}\n  b: x\n")
    assert msg == f"{path}:5: pair 1 (id 'p1'), field 'a': String should have at least 1 character"


def test_pair_wrong_types(tmp_path):
    path, msg = corpus_error(tmp_path, GOOD_PAIR + "- id: p1\n  a: x\n  b: y\n  tags: x\n"
                                                   "- id: 7\n  a: x\n  b: y\n  tags: [ok, 3]\n")
    assert msg.splitlines() == [
        f"{path}:7: pair 1 (id 'p1'), field 'tags': Input should be a valid list",
        f"{path}:8: pair 2, field 'id': Input should be a valid string",
        f"{path}:11: pair 2, field 'tags.1': Input should be a valid string",
    ]


def test_pair_not_a_mapping(tmp_path):
    path, msg = corpus_error(tmp_path, GOOD_PAIR + "- just a sentence\n")
    assert msg == f"{path}:4: pair 1: must be a mapping with id, a and b"


def test_duplicate_ids_name_both_pairs(tmp_path):
    text = GOOD_PAIR + "- id: p1\n  a: x\n  b: y\n- id: p0\n  a: z\n  b: w\n"
    path, msg = corpus_error(tmp_path, text)
    assert msg == f"{path}:7: pair 2, field 'id': duplicate id 'p0' (first used by pair 0 on line 1)"


def test_corpus_yaml_syntax_error_and_alias(tmp_path):
    path, msg = corpus_error(tmp_path, GOOD_PAIR + '- id: p1\n  a: "unclosed\n')
    assert msg.startswith(f"{path}:") and "YAML error in corpus file" in msg
    assert re.match(rf"{re.escape(str(path))}:\d+: ", msg)
    path, msg = corpus_error(tmp_path, '- id: p0\n  a: &s "Same."\n  b: *s\n')
    assert msg == f"{path}:3: YAML error in corpus file: YAML aliases (*name) are not allowed in atlas files"


@pytest.mark.parametrize("text", ["", "# only a comment\n", "[]\n", "null\n"])
def test_empty_corpus(tmp_path, text):
    path, msg = corpus_error(tmp_path, text)
    assert msg == f"{path}: the corpus has no pairs; add at least one pair (id, a, b)"


@pytest.mark.parametrize("text", ["just text\n", "42\n"])
def test_corpus_not_a_list(tmp_path, text):
    path, msg = corpus_error(tmp_path, text)
    assert msg == f"{path}:1: the corpus must be a YAML list of pairs (each '- id: ..., a: ..., b: ...') or a mapping with 'pairs:'"


def test_corpus_mapping_without_pairs(tmp_path):
    """A single pair written without the leading '-' reads as a mapping: the
    error says what a mapping needs."""
    path, msg = corpus_error(tmp_path, "id: p0\na: x\nb: y\n")
    assert msg == (f"{path}:1: a corpus written as a mapping needs a 'pairs:' list (next to the optional name, "
                   "description, source, license)")


def test_corpus_mapping_with_metadata(tmp_path):
    path = tmp_path / "corpus.yml"
    path.write_text("name: Tiny\nlicense: CC0\npairs:\n  - {id: p0, a: x, b: y}\n", encoding="utf-8")
    assert [p.id for p in load_corpus(path)] == ["p0"]
    assert load_corpus_meta(path).shown() == {"name": "Tiny", "license": "CC0"}


def test_corpus_missing_file(tmp_path):
    with pytest.raises(AtlasError, match="corpus file not found"):
        load_corpus(tmp_path / "none.yml")


# ------------------------------------------------------- control characters


def test_control_characters_stripped_with_warning(tmp_path, caplog):
    kept = "Zero\u200dwidth 👩\u200d👩\u200d👧 مرحبا بالعالم cafe\u0301 \u05e9\u05dc\u05d5\u05dd"
    items = [{"id": "p0", "a": "fine", "b": "fine"},
             {"id": "ctl", "a": "be\x00fore\x07 " + kept + "\x1b[31m", "b": "x\x7f\x85y\u2028z",
              "title": "ti\x0ctle", "note": "tab\tand\nnewline are whitespace"}]
    import yaml

    path = write(tmp_path, "corpus.yml", yaml.safe_dump(items, allow_unicode=True, sort_keys=False))
    with caplog.at_level(logging.WARNING, logger="generator.config"):
        pairs = load_corpus(path)
    p = pairs[1]
    assert p.a == "before " + kept + "[31m"
    assert p.b == "xyz"
    assert p.title == "title"
    assert p.note == "tab and newline are whitespace"
    for piece in ("\u200d", "👩", "مرحبا", "e\u0301", "\u05e9"):
        assert piece in p.a
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3  # a, b, title; tab/newline in note are only whitespace
    assert all(w.startswith(f"{path}:") and "pair 1 (id 'ctl')" in w for w in warnings)
    assert {re.search(r"field '(\w+)'", w).group(1) for w in warnings} == {"a", "b", "title"}
    assert all(w.endswith("removed control characters") for w in warnings)


def test_clean_text_keeps_scripts_without_warning(tmp_path, caplog):
    text = "مرحبا 👩\u200d👩\u200d👧 e\u0301 中文"
    path = write(tmp_path, "corpus.yml", f"- id: ok\n  a: {json.dumps(text, ensure_ascii=False)}\n  b: x\n")
    with caplog.at_level(logging.WARNING):
        (pair,) = load_corpus(path)
    assert pair.a == text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


# -------------------------------------------------------------------- slug

SLUG_RE = re.compile(r"^[a-z0-9-]+$")
NASTY = ["../x", "../../etc/passwd", "con", "CON", "nul", "com1", "lpt9", "index", "a b", "a/b", "a\\b", "x" * 300,
         "y" * 300, "x" * 299 + "y", "你好世界", "中文", "日本語", "", " ", "-", "...", ".hidden", "a", "A", "café",
         "cafe\u0301", "ÄÖÜ", "a\x00b", "vig-store", "Vig Store", "vig_store", "👩\u200d👩\u200d👧", "a" * 48,
         "a" * 49, "مرحبا"]


@pytest.mark.parametrize("text", NASTY)
def test_slug_is_safe(text):
    s = slug(text)
    assert SLUG_RE.match(s), s
    assert len(s) <= 60
    assert s not in {"con", "prn", "aux", "nul", "index", "assets", "data", "search", ".", ".."}
    assert not s.startswith("-") and not s.endswith("-")


def test_slug_examples():
    assert slug("vig-store") == "vig-store"  # already a slug: kept as it is
    assert re.fullmatch(r"x-[0-9a-f]{8}", slug("../x"))
    assert re.fullmatch(r"id-[0-9a-f]{8}", slug("con"))
    assert re.fullmatch(r"a-b-[0-9a-f]{8}", slug("a b"))
    assert re.fullmatch(r"id-[0-9a-f]{8}", slug("你好世界"))
    assert re.fullmatch(r"x{48}-[0-9a-f]{8}", slug("x" * 300))
    assert slug("a b") == slug("a b")  # deterministic


def test_slug_distinct_inputs_distinct_slugs():
    slugs = [slug(t) for t in NASTY]
    assert len(set(slugs)) == len(set(NASTY))
    chinese = [slug(t) for t in ("你好", "你好吗", "再见", "中文", "中文。")]
    assert len(set(chinese)) == 5


def test_slug_not_fooled_by_a_text_that_looks_like_a_hashed_slug():
    assert slug(slug("a b")) != slug("a b")


# --------------------------------------------------------- embedded JSON


HOSTILE = ["</script><script>alert(1)</script>", "<!--", "a & b", "&amp;", "<b>x</b>", "\u2028\u2029",
           '"quoted"', "'single'", "##berries", "[CLS]", "مرحبا", "👩\u200d👩\u200d👧", "e\u0301"]


def test_json_for_script_is_inert_and_round_trips():
    value = {"tokens": HOSTILE, "escaped": escape_tokens(HOSTILE), "b&<>": [1.5, None, True],
             "nested": {"z": "</SCRIPT>", "a": "&#x27;"}}
    text = json_for_script(value)
    for ch in "<>&":
        assert ch not in text
    assert text.isascii()
    assert "\u2028" not in text and "\u2029" not in text
    assert json.loads(text) == value
    assert json_for_script({"b": 1, "a": [2]}) == '{"a":[2],"b":1}'


def test_escape_tokens():
    out = escape_tokens(HOSTILE)
    assert out[:5] == ["&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;", "&lt;!--", "a &amp; b",
                       "&amp;amp;", "&lt;b&gt;x&lt;/b&gt;"]
    for token in out:
        assert "<" not in token and ">" not in token and '"' not in token and "'" not in token
        # every & starts an entity
        assert re.fullmatch(r"(?:[^&]|&(?:amp|lt|gt|quot|#x27);)*", token), token
    assert [html.unescape(t) for t in out] == HOSTILE


# --------------------------------------------------------------------- CLI


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([PYTHON, "-m", "generator", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def test_cli_help():
    top = cli("--help")
    assert top.returncode == 0, top.stderr
    assert "build" in top.stdout and "check" in top.stdout
    build = cli("build", "--help")
    assert build.returncode == 0, build.stderr
    for flag in ("--config", "--corpus", "--site-dir", "--quiet"):
        assert flag in build.stdout


def test_cli_bad_config_exits_2_without_traceback(tmp_path):
    config = write_project(tmp_path, [{"id": "p0", "a": "x", "b": "y"}], compute={"batch_size": "many"})
    r = cli("build", "--config", str(config))
    assert r.returncode == 2
    assert r.stderr.startswith("error: ")
    assert f"{config}:" in r.stderr and "field 'compute.batch_size'" in r.stderr
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout


def test_cli_missing_config_exits_2(tmp_path):
    r = cli("check", "--config", str(tmp_path / "absent.yml"))
    assert r.returncode == 2
    assert r.stderr.strip() == f"error: {tmp_path / 'absent.yml'}: config file not found"


def test_cli_check_ok(tmp_path):
    config = write_project(tmp_path, [{"id": "p0", "a": "x", "b": "y"}, {"id": "p1", "a": "x", "b": "y"}])
    r = cli("check", "--config", str(config))
    assert r.returncode == 0, r.stderr
    assert "2 pairs ok" in r.stdout


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _old_site(project: Path) -> dict[str, bytes]:
    site = project / "site"
    (site / "heads").mkdir(parents=True)
    (site / "index.html").write_text("<p>the previous build</p>", encoding="utf-8")
    (site / "heads" / "l0h0.html").write_text("marker", encoding="utf-8")
    return _snapshot(site)


def test_failing_build_leaves_old_site_untouched(tmp_path):
    items = [{"id": "p0", "a": "I went to the store.", "b": "At the store."}, {"id": "p1", "a": "no b here"}]
    config = write_project(tmp_path, items)
    before = _old_site(tmp_path)
    entries = sorted(p.name for p in tmp_path.iterdir())
    r = cli("build", "--config", str(config), "--quiet")
    assert r.returncode == 2
    corpus = tmp_path / "content" / "corpus.yml"
    assert corpus.read_text(encoding="utf-8").splitlines()[3] == "- id: p1"
    assert r.stderr.strip() == f"error: {corpus}:4: pair 1 (id 'p1'), field 'b': required field is missing"
    assert "Traceback" not in r.stderr
    assert _snapshot(tmp_path / "site") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == entries  # no half-written site next to it


def test_build_failing_after_model_load_leaves_old_site_untouched(tmp_path):
    """A pair that passes validation but has no token ("\\u200d" is kept by
    clean_text, dropped by the tokenizer) fails inside compute()."""
    from generator.cli import run_build

    config = write_project(tmp_path, [{"id": "p0", "a": "Fine.", "b": "Fine."},
                                      {"id": "zwj", "a": "\u200d", "b": "Fine."}])
    before = _old_site(tmp_path)
    with pytest.raises(AtlasError, match=r"pair 1 \(id 'zwj'\), field 'a': the text has no token left"):
        run_build(config, progress=False)
    assert _snapshot(tmp_path / "site") == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".site")]


def test_perturbed_layer_out_of_range_names_the_file_and_field(tmp_path):
    """The layer is checked against the model's layer count (6 for the
    default model) once the model is known: an AtlasError with the line of the
    setting, not a traceback from inside the analysis."""
    from generator.cli import run_build

    config = write_project(tmp_path, [{"id": "p0", "a": "The cat sat.", "b": "The dog ran."}],
                           analysis={"perturbed_masking": True, "perturbed_layer": 6})
    line = next(i for i, text in enumerate(config.read_text().splitlines(), 1) if "perturbed_layer" in text)
    with pytest.raises(AtlasError) as err:
        run_build(config, progress=False)
    assert str(err.value).startswith(f"{config}:{line}: field 'analysis.perturbed_layer': 6 is not a layer of")
    assert "6 layers: use 0..5 (0 = first) or -1..-6 (-1 = last)" in str(err.value)


def test_every_setting_is_documented():
    from generator.config import settings

    listed = settings()
    assert len(listed) > 20
    for name, prop in listed:
        assert prop.get("description", "").strip(), f"{name} has no description"


def test_readme_configuration_table_is_the_generated_one():
    """README.md's Configuration section is exactly what `python -m
    generator.config --readme` writes (run it, or `make readme`, after
    changing a setting)."""
    from generator import readme
    from generator.config import readme_section, settings

    text = readme.README.read_text(encoding="utf-8")
    assert readme.current_section(text, "config") == readme_section()
    for name, _ in settings():
        assert f"| `{name}` |" in text


def test_readme_section_replacement_keeps_the_rest(tmp_path):
    from generator import readme

    path = tmp_path / "README.md"
    path.write_text("# T\n\nintro\n", encoding="utf-8")
    start, end = readme.markers("config")
    readme.update_readme(path, "config", f"{start}\nv1\n{end}", "## Configuration")
    path.write_text(path.read_text(encoding="utf-8") + "\n## After\n\nkept\n", encoding="utf-8")
    readme.update_readme(path, "config", f"{start}\nv2\n{end}", "## Configuration")
    text = path.read_text(encoding="utf-8")
    assert text == f"# T\n\nintro\n\n## Configuration\n\n{start}\nv2\n{end}\n\n## After\n\nkept\n"


def test_libyaml_and_python_parsers_read_the_same(monkeypatch):
    """The corpus read by libyaml (when PyYAML has it) equals the pure-Python
    parser's reading, line numbers included."""
    if yamlio._FAST_LOADER is None:
        pytest.skip("PyYAML was built without libyaml")
    path = Path(__file__).resolve().parent.parent / "content" / "corpus.yml"
    fast = yamlio.load_yaml(path, "corpus")
    monkeypatch.setattr(yamlio, "_FAST_LOADER", None)
    slow = yamlio.load_yaml(path, "corpus")
    assert fast.data == slow.data
    pairs = fast.data["pairs"] if isinstance(fast.data, dict) else fast.data
    for k, pair in enumerate(pairs):
        for key in pair:
            loc = ("pairs", k, key) if isinstance(fast.data, dict) else (k, key)
            assert fast.line_of(loc) == slow.line_of(loc)


@pytest.mark.parametrize("depth", [30, 31, 32, 33])
def test_libyaml_and_python_parsers_agree_on_nesting_depth(tmp_path, monkeypatch, depth):
    path = tmp_path / "deep.yml"
    path.write_text("[" * depth + "1" + "]" * depth + "\n", encoding="utf-8")

    def outcome():
        try:
            return yamlio.load_yaml(path, "corpus").data
        except AtlasError as exc:
            return str(exc)

    fast = outcome()
    monkeypatch.setattr(yamlio, "_FAST_LOADER", None)
    assert fast == outcome()
