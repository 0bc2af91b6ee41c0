"""Atomic, reproducible builds: a failure at any stage (corpus, model,
rendering, mkdocs, Ctrl-C, even between the two renames of the swap) leaves
the previous site byte for byte and no temporary folder behind; two builds of
the same input, one recomputed from an emptied cache, are byte-identical; a
damaged cache entry is detected and recomputed, never trusted.

Exceptions to byte-identity: none. The only date in the output (the sitemap's
``lastmod`` when ``site.site_url`` is set, and the gzip header of
``sitemap.xml.gz``) is SOURCE_DATE_EPOCH, taken from the newest mtime of the
config and corpus files, so it changes only when those files are touched.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from generator import cache, site as site_module
from generator.cli import main, run_build
from generator.config import load_config, load_corpus, with_overrides
from generator.errors import AtlasError
from generator.pipeline import compute

ROOT = Path(__file__).resolve().parent.parent
VENV_PY = ROOT / ".venv" / "bin" / "python"
PYTHON = str(VENV_PY) if VENV_PY.exists() else sys.executable


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers(project: Path) -> list[str]:
    """Temporary folders of a build: render-* under build/, .site-* next to site/."""
    found = [p.name for p in project.iterdir() if p.name.startswith(".site")]
    build = project / "build"
    if build.exists():
        found += [f"build/{p.name}" for p in build.iterdir() if p.name != "cache"]
        for kind in (build / "cache").glob("*"):
            found += [f"cache/{kind.name}/{p.name}" for p in kind.iterdir() if p.name.startswith(".")]
    return found


def copy_project(built_site: dict, dest: Path, with_cache: bool) -> Path:
    """The session project's config and corpus (mtimes kept) in ``dest``,
    with or without its score cache; returns the config path."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(built_site["config"], dest / "site_config.yml")
    shutil.copytree(built_site["project"] / "content", dest / "content", copy_function=shutil.copy2)
    if with_cache:
        shutil.copytree(built_site["build"] / "cache", dest / "build" / "cache")
    return dest / "site_config.yml"


def previous_site(project: Path) -> dict[str, bytes]:
    site = project / "site"
    (site / "heads").mkdir(parents=True, exist_ok=True)
    (site / "index.html").write_text("<p>the previous build</p>", encoding="utf-8")
    (site / "heads" / "l0h0.html").write_text("marker", encoding="utf-8")
    return snapshot(site)


@pytest.fixture(scope="module")
def cached(built_site, tmp_path_factory):
    """The session project's config, corpus and computed data, read from a
    copy of its cache (no model run)."""
    project = tmp_path_factory.mktemp("atomic")
    config = copy_project(built_site, project / "src", with_cache=True)
    cfg = load_config(config)
    pairs = load_corpus(cfg.corpus_path)
    data = compute(cfg, pairs, progress=False)
    assert "forward_score_s" not in data.timings  # read from the cache
    return cfg, data


def project_cfg(cfg, folder: Path):
    """``cfg`` building into ``folder``/site with its temporary folders in ``folder``/build."""
    return cfg.model_copy(update={"site_dir": (folder / "site").resolve(), "build_dir": (folder / "build").resolve()})


# --------------------------------------------------------- failing stages


def test_model_error_leaves_previous_site(tmp_path, capsys):
    from conftest import write_project

    config = write_project(tmp_path, [{"id": "p0", "a": "Hi.", "b": "Yo."}],
                           model={"name_or_path": str(tmp_path / "no-such-model")})
    before = previous_site(tmp_path)
    assert main(["build", "--config", str(config), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: model.name_or_path: folder") and "does not exist" in err
    assert snapshot(tmp_path / "site") == before
    assert not leftovers(tmp_path)


def test_template_error_leaves_previous_site(cached, tmp_path, monkeypatch):
    """A page whose template is missing fails the render after other pages
    were written; the error names the page and the template."""
    cfg, data = cached
    real = site_module.site_pages

    def with_a_broken_page(ctx):
        pages = real(ctx)
        return pages[:4] + [site_module.Page("broken.md", "no-such-template.md.j2", "Broken", lambda: None)] + pages[4:8]

    monkeypatch.setattr(site_module, "site_pages", with_a_broken_page)
    target = project_cfg(cfg, tmp_path)
    before = previous_site(tmp_path)
    with pytest.raises(AtlasError, match=r"page broken\.md \(template templates/no-such-template\.md\.j2\)"):
        site_module.build_site(target, data)
    assert snapshot(tmp_path / "site") == before
    assert not leftovers(tmp_path)


def _tiny_docs(cfg, data, docs: Path, site_out: Path, body: str) -> Path:
    """A one-page mkdocs project (Material theme, strict) writing to ``site_out``."""
    docs.mkdir(parents=True)
    (docs / "index.md").write_text(body, encoding="utf-8")
    config = docs.parent / "mkdocs.yml"
    config.write_text(json.dumps({"site_name": "t", "docs_dir": str(docs), "site_dir": str(site_out),
                                  "strict": True, "theme": {"name": "material", "font": False},
                                  "validation": {"links": {"not_found": "warn"}}}), encoding="utf-8")
    return config


def test_real_mkdocs_error_leaves_previous_site(cached, tmp_path, monkeypatch):
    """mkdocs --strict fails on a broken link after writing its output into
    the temporary site folder; none of it reaches site/."""
    cfg, data = cached
    monkeypatch.setattr(site_module, "render_docs",
                        lambda cfg, data, docs, out: _tiny_docs(cfg, data, docs, out, "[gone](missing.md)\n"))
    target = project_cfg(cfg, tmp_path)
    before = previous_site(tmp_path)
    with pytest.raises(AtlasError, match="mkdocs build"):
        site_module.build_site(target, data)
    assert snapshot(tmp_path / "site") == before
    assert not leftovers(tmp_path)


@pytest.mark.parametrize("error", [AtlasError("mkdocs build failed: boom"), KeyboardInterrupt()],
                         ids=["mkdocs-error", "ctrl-c"])
def test_failure_inside_mkdocs_leaves_previous_site(cached, tmp_path, monkeypatch, error):
    cfg, data = cached
    monkeypatch.setattr(site_module, "render_docs",
                        lambda cfg, data, docs, out: _tiny_docs(cfg, data, docs, out, "# fine\n"))

    def half_written(config_file: Path) -> None:
        out = Path(json.loads(config_file.read_text(encoding="utf-8"))["site_dir"])
        (out / "index.html").write_text("half a new site", encoding="utf-8")
        raise error

    monkeypatch.setattr(site_module, "mkdocs_build", half_written)
    target = project_cfg(cfg, tmp_path)
    before = previous_site(tmp_path)
    with pytest.raises(type(error)):
        site_module.build_site(target, data)
    assert snapshot(tmp_path / "site") == before
    assert not leftovers(tmp_path)


def test_ctrl_c_between_the_two_renames_of_the_swap_restores_the_previous_site(cached, tmp_path, monkeypatch):
    """The swap moves site/ aside, then the new site in; Ctrl-C right between
    the two renames puts the previous site back."""
    cfg, data = cached
    monkeypatch.setattr(site_module, "render_docs",
                        lambda cfg, data, docs, out: _tiny_docs(cfg, data, docs, out, "# new\n"))
    real_replace = os.replace
    calls = []

    def interrupted(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_replace(src, dst)

    target = project_cfg(cfg, tmp_path)
    before = previous_site(tmp_path)
    monkeypatch.setattr(site_module.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        site_module.build_site(target, data)
    monkeypatch.undo()
    assert len(calls) >= 2
    assert snapshot(tmp_path / "site") == before
    assert not leftovers(tmp_path)


def test_ctrl_c_during_compute_exits_130(tmp_path, monkeypatch, capsys):
    from conftest import write_project
    import generator.pipeline

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(generator.pipeline, "compute", interrupted)
    config = write_project(tmp_path, [{"id": "p0", "a": "Hi.", "b": "Yo."}])
    before = previous_site(tmp_path)
    assert main(["build", "--config", str(config), "--quiet"]) == 130
    assert "interrupted: the previous site was left as it was" in capsys.readouterr().err
    assert snapshot(tmp_path / "site") == before
    assert not leftovers(tmp_path)


def test_real_sigint_during_the_build(built_site, tmp_path):
    """A real Ctrl-C (SIGINT) to ``python -m generator build`` while it
    renders: exit 130, one line on stderr, the previous site intact, no
    temporary folder left.

    On a busy machine a signal sent "now" can land after the build is done,
    so the build is frozen (SIGSTOP) as soon as its render folder appears,
    checked to be still before the swap, sent SIGINT and resumed (SIGCONT):
    the interrupt then lands inside the build whatever the load. A build
    frozen too late (already published) is run again."""
    for attempt in range(5):
        folder = tmp_path / f"try{attempt}"
        config = copy_project(built_site, folder, with_cache=True)
        before = previous_site(folder)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        # a user's Ctrl-C reaches a build started from a terminal; a build started in the background by a
        # non-interactive shell (as a CI script may start the tests) inherits SIGINT ignored: undo that
        proc = subprocess.Popen([PYTHON, "-m", "generator", "build", "--config", str(config), "--quiet"],
                                cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        deadline = time.monotonic() + 300
        while not list((folder / "build").glob("render-*")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proc.poll() is None, proc.communicate()  # it reached rendering
        proc.send_signal(signal.SIGSTOP)
        published = snapshot(folder / "site") != before
        proc.send_signal(signal.SIGINT)
        proc.send_signal(signal.SIGCONT)
        out, err = proc.communicate(timeout=300)
        assert not leftovers(folder), (proc.returncode, err)
        assert "Traceback" not in err
        if published:  # frozen at or after the swap: a whole new site, or (between its renames) the old one back
            assert (proc.returncode == 0 and snapshot(folder / "site") != before) or \
                (proc.returncode == 130 and snapshot(folder / "site") == before), err
            continue
        assert proc.returncode == 130, err
        assert err.strip().splitlines()[-1] == "interrupted: the previous site was left as it was"
        assert snapshot(folder / "site") == before
        return
    pytest.fail("the build had published its site before it could be frozen, five times")


# ---------------------------------------------------------- permissions


def test_published_site_has_ordinary_permissions(built_site):
    """The site folder is readable by others (as mkdir would make it), not
    the 0700 of a temporary folder: a web server or a checker running as
    another user must be able to read it."""
    umask = os.umask(0)
    os.umask(umask)
    mode = stat.S_IMODE(built_site["site"].stat().st_mode)
    assert mode == 0o777 & ~umask, oct(mode)


# ---------------------------------------------------------- reproducible


def test_rebuild_from_scratch_is_byte_identical(tmp_path, monkeypatch):
    """A small corpus built from scratch, then the same config and corpus
    (same mtimes) in another folder with an empty cache: the model runs
    again, and every page, asset and data file is equal byte for byte (no
    random ids, no timestamps, no absolute paths). (The session site, whose
    analyses take minutes to recompute, is compared after a cached rebuild
    in test_site.py; :func:`test_pages_do_not_depend_on_compute_timings`
    covers what differs between recomputations there.)"""
    from conftest import small_corpus_items, write_project

    items = small_corpus_items(3)
    first = write_project(tmp_path / "first", items, examples_per_head=1)
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    run_build(first, progress=False)
    assert "SOURCE_DATE_EPOCH" not in os.environ  # the build's date does not leak into the next build
    second = tmp_path / "second"
    second.mkdir()
    shutil.copy2(first, second / "site_config.yml")
    shutil.copytree(tmp_path / "first" / "content", second / "content", copy_function=shutil.copy2)
    timings = run_build(second / "site_config.yml", progress=False)
    assert "forward_score_s" in timings and "showcase_s" in timings  # recomputed, not read
    a, b = snapshot(tmp_path / "first" / "site"), snapshot(second / "site")
    assert sorted(a) == sorted(b)
    differing = [name for name in a if a[name] != b[name]]
    assert not differing, differing[:10]
    assert "sitemap.xml.gz" in a and str(tmp_path) not in b["index.html"].decode()


def test_pages_do_not_depend_on_compute_timings(cached, tmp_path):
    """Timings differ on every recomputation (model, analyses): the pages
    must not show them. The session data rendered twice, once with every
    timing changed, gives the same pages."""
    cfg, data = cached
    site_module.render_docs(cfg, data, tmp_path / "a" / "docs", tmp_path / "a" / "site")
    changed = copy.copy(data)
    changed.timings = {k: v + 123.4 for k, v in data.timings.items()} | {"load_s": 9.9, "forward_score_s": 9.9}
    if data.analysis is not None:
        changed.analysis = copy.copy(data.analysis)
        changed.analysis.timings = {k: v + 123.4 for k, v in data.analysis.timings.items()} | {"ablation_s": 99.9}
    site_module.render_docs(cfg, changed, tmp_path / "b" / "docs", tmp_path / "b" / "site")
    a, b = snapshot(tmp_path / "a" / "docs"), snapshot(tmp_path / "b" / "docs")
    assert a.keys() == b.keys()
    if data.analysis is not None:
        assert "importance.md" in a  # the analyses' page is among those compared
    assert [name for name in a if a[name] != b[name]] == []


# --------------------------------------------------------------- cache


def _entry(tmp_path: Path) -> tuple[Path, dict]:
    arrays = {"x": np.arange(12, dtype=np.float32).reshape(3, 4), "n": np.array([1, 2, 3])}
    cache.store(tmp_path, "scores", "k" * 24, arrays, {"tokens": [["[CLS]", "hi"]]})
    assert cache.load(tmp_path, "scores", "k" * 24) is not None
    return tmp_path / "scores" / ("k" * 24), arrays


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _manifest(entry: Path, **changes) -> None:
    manifest = json.loads((entry / "manifest.json").read_text())
    manifest.update(changes)
    (entry / "manifest.json").write_text(json.dumps(manifest))


def _pickled_arrays(entry: Path) -> None:
    """An object array (would need pickle to load) with a matching checksum."""
    np.savez(entry / "arrays.npz", x=np.array([{"evil": 1}], dtype=object))
    _manifest(entry, sha256={"arrays.npz": cache._sha(entry / "arrays.npz"),
                             "meta.json": cache._sha(entry / "meta.json")})


DAMAGE = {
    "truncated-arrays": lambda e: _truncate(e / "arrays.npz"),
    "truncated-meta": lambda e: _truncate(e / "meta.json"),
    "flipped-byte": lambda e: _flip_byte(e / "arrays.npz"),
    "empty-arrays": lambda e: (e / "arrays.npz").write_bytes(b""),
    "missing-arrays": lambda e: (e / "arrays.npz").unlink(),
    "missing-manifest": lambda e: (e / "manifest.json").unlink(),
    "manifest-not-json": lambda e: (e / "manifest.json").write_text("{nope"),
    "manifest-is-a-list": lambda e: (e / "manifest.json").write_text("[]"),
    "other-cache-version": lambda e: _manifest(e, format=cache.CACHE_FORMAT + 1),
    "no-version": lambda e: _manifest(e, format=None),
    "other-key": lambda e: _manifest(e, key="x" * 24),
    "pickled-object-array": _pickled_arrays,
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_cache_entry_is_refused_and_removed(tmp_path, caplog, damage):
    entry, arrays = _entry(tmp_path)
    DAMAGE[damage](entry)
    with caplog.at_level(logging.WARNING, logger="generator.cache"):
        assert cache.load(tmp_path, "scores", "k" * 24) is None
    assert any("is damaged" in r.getMessage() and "recomputing" in r.getMessage() for r in caplog.records)
    assert not entry.exists()
    # the recomputed entry is stored and trusted again
    cache.store(tmp_path, "scores", "k" * 24, arrays, {"tokens": []})
    loaded, meta = cache.load(tmp_path, "scores", "k" * 24)
    assert np.array_equal(loaded["x"], arrays["x"]) and meta == {"tokens": []}


def test_a_new_cache_format_never_reads_old_entries(tmp_path, monkeypatch):
    entry, _ = _entry(tmp_path)
    monkeypatch.setattr(cache, "CACHE_FORMAT", cache.CACHE_FORMAT + 1)
    assert cache.load(tmp_path, "scores", "k" * 24) is None


def test_damaged_cache_is_recomputed_in_a_build(cached, tmp_path, caplog):
    """Truncated scores and a showcase entry from another cache version: the
    next compute warns, runs the model again and gets the same numbers."""
    cfg, data = cached
    shutil.copytree(cfg.build_dir / "cache", tmp_path / "build" / "cache")
    target = project_cfg(cfg, tmp_path)
    scores = next((tmp_path / "build" / "cache" / "scores").iterdir())
    _truncate(scores / "arrays.npz")
    showcase = next((tmp_path / "build" / "cache" / "showcase").iterdir())
    _manifest(showcase, format=0)
    with caplog.at_level(logging.WARNING, logger="generator.cache"):
        again = compute(target, data.pairs, progress=False)
    assert "forward_score_s" in again.timings and "showcase_s" in again.timings
    damaged = [r.getMessage() for r in caplog.records if "is damaged" in r.getMessage()]
    assert len(damaged) == 2, damaged
    assert np.allclose(again.pair_scores, data.pair_scores, atol=1e-6, equal_nan=True)
    assert [h.label for h in again.heads] == [h.label for h in data.heads]
    assert sorted(again.showcase.attention) == sorted(data.showcase.attention)
    # the rewritten entries are whole again: a third compute reads them
    third = compute(target, data.pairs, progress=False)
    assert "forward_score_s" not in third.timings and "showcase_s" not in third.timings
    assert not leftovers(tmp_path)


def test_code_version_covers_every_computing_module_and_no_page_module():
    """Every module that can shape a cached number is in the cache's code
    version, a new one included; the presentation layer is not, so editing a
    page does not rerun the model."""
    package = Path(cache.__file__).parent
    sources = {p.relative_to(package).as_posix() for p in cache.computing_sources()}
    for module in ("scoring.py", "patterns.py", "budget.py", "tokens.py", "value_norms.py", "model.py",
                   "config.py", "compare.py", "analysis/importance.py", "analysis/run.py", "qk.py", "rollout.py"):
        assert module in sources, module
    assert not any(s.startswith("pages/") for s in sources)
    assert not sources & {"figures.py", "site.py", "views.py", "export.py", "links.py"}
    every = {p.relative_to(package).as_posix() for p in package.rglob("*.py")}
    assert every - sources == {s for s in every if s.startswith(cache.PRESENTATION)}
