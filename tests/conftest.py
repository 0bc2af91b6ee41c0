"""Shared fixtures: a real site built once per test session from a small real
corpus with the packaged model, a local HTTP server for it (at / and under a
/repo/ subpath, as on GitHub Pages), and headless Chromium."""

from __future__ import annotations

import functools
import http.server
import shutil
import socketserver
import threading
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent

#: Corpus text that must show literally and execute nothing.
HOSTILE_PAIRS = [
    {"id": "xss-img", "a": "<img src=x onerror=alert(1)>", "b": "</script><script>alert(1)</script>",
     "title": "<b>bold?</b>", "note": "{{ jinja }} {% raw %} [x](javascript:alert(1)) *a* _b_ | c |"},
    {"id": "../x", "a": "Tom &amp; Jerry &lt;3 the store.", "b": "The store sells *stars* and _lines_ | pipes."},
]


def small_corpus_items(n_regular: int = 8) -> list[dict]:
    """The first ``n_regular`` pairs of the shipped corpus, one Chinese pair
    and the hostile pairs."""
    items = yaml.safe_load((ROOT / "content" / "corpus.yml").read_text(encoding="utf-8"))
    chinese = [p for p in items if "chinese" in p.get("tags", [])][:1]
    return items[:n_regular] + chinese + HOSTILE_PAIRS


def write_project(folder: Path, items: list[dict], **overrides) -> Path:
    """Write a config and corpus into ``folder``; returns the config path.
    ``overrides`` are merged into the config's top level (one level deep)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "content").mkdir(exist_ok=True)
    (folder / "content" / "corpus.yml").write_text(yaml.safe_dump(items, allow_unicode=True, sort_keys=False),
                                                   encoding="utf-8")
    config = {
        "site": {"title": "Test Atlas", "description": "A test build."},
        "model": {"max_length": 64},
        "compute": {"device": "cpu", "batch_size": 8},
        "corpus": "content/corpus.yml",
        "examples_per_head": 2,
        "pair_pages": "all",
        # the analyses cost tens of seconds; tests that need them turn them on
        "analysis": {"importance": False, "group_masking": False, "attribution": False,
                     "perturbed_masking": False, "head_map": False},
        "output": {"build_dir": "build", "site_dir": "site"},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    path = folder / "site_config.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def built_site(tmp_path_factory) -> dict:
    """Build one real site; returns ``{"config", "site", "build", "project"}`` paths."""
    from generator.cli import run_build

    project = tmp_path_factory.mktemp("atlas")
    config = write_project(project, small_corpus_items(),
                           analysis={"importance": True, "group_masking": True, "attribution": True,
                                     "perturbed_masking": True, "head_map": True, "max_pairs": 2})
    import generator.site
    rows = generator.site.EXPORT_PROCESS_ROWS
    generator.site.EXPORT_PROCESS_ROWS = 0  # the per-pair CSV is written by its own process, as for a large corpus
    try:
        run_build(config, progress=False)
    finally:
        generator.site.EXPORT_PROCESS_ROWS = rows
    return {"config": config, "site": project / "site", "build": project / "build", "project": project}


@pytest.fixture(scope="session")
def ctx(built_site, tmp_path_factory):
    """The session site's data as the pages see it (:class:`generator.pages.common.SiteContext`),
    read back from a copy of its cache: no model run."""
    from generator.config import load_config, load_corpus
    from generator.pages.common import SiteContext
    from generator.pipeline import compute

    project = tmp_path_factory.mktemp("pages")
    shutil.copy2(built_site["config"], project / "site_config.yml")
    shutil.copytree(built_site["project"] / "content", project / "content", copy_function=shutil.copy2)
    shutil.copytree(built_site["build"] / "cache", project / "build" / "cache")
    cfg = load_config(project / "site_config.yml")
    data = compute(cfg, load_corpus(cfg.corpus_path), progress=False)
    assert "forward_score_s" not in data.timings
    return SiteContext(cfg, data)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def serve(directory: Path):
    """Start a server for ``directory`` on 127.0.0.1 (free port); returns (server, base URL)."""
    handler = functools.partial(_Quiet, directory=str(directory))
    server = _Server(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


@pytest.fixture(scope="session")
def site_url(built_site):
    """The built site served at the server root."""
    server, url = serve(built_site["site"])
    yield url
    server.shutdown()


@pytest.fixture(scope="session")
def subpath_url(built_site, tmp_path_factory):
    """The built site served under ``/repo/``, as GitHub Pages serves a project site."""
    root = tmp_path_factory.mktemp("pages")
    shutil.copytree(built_site["site"], root / "repo")
    server, url = serve(root)
    yield url + "repo/"
    server.shutdown()


@pytest.fixture(scope="session")
def browser():
    """Headless Debian Chromium driven by Playwright (no browser download)."""
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.fail("chromium is not installed: apt-get install -y chromium (the CI script does this)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, headless=True,
                              args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                    "--disable-component-update", "--disable-sync", "--no-first-run",
                                    "--disable-quic"])
        yield b
        b.close()


class PageWatch:
    """A page plus everything it did: console errors, page errors, requests."""

    def __init__(self, page):
        self.page = page
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.failed: list[str] = []
        page.on("console", lambda m: self.errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        page.on("request", lambda r: self.requests.append(r.url))
        # the favicon is fetched by the browser on its own schedule and aborted when the page moves on:
        # not a request of the site's pages
        page.on("requestfailed", lambda r: None if r.url.endswith("/favicon.png") else self.failed.append(r.url))
        page.on("dialog", lambda d: (self.errors.append(f"dialog: {d.message}"), d.dismiss()))

    VIEWS = ".atlas-figure, .atlas-headview, .atlas-modelview, .atlas-qkview, .atlas-compareview"

    def open(self, url: str, timeout_s: float = 60.0) -> None:
        """Load ``url`` and scroll through it as a reader would (figures render when they come near
        the viewport), until every figure and view has rendered; then back to the top."""
        import time

        self.page.goto(url, wait_until="load")
        deadline = time.monotonic() + timeout_s
        done = "() => [...document.querySelectorAll(%r)].every(e => e.getAttribute('data-rendered'))" % self.VIEWS
        y = 0
        while not self.page.evaluate(done):
            height = self.page.evaluate("document.documentElement.scrollHeight")
            y = y + 600 if y < height else 0
            self.page.evaluate(f"window.scrollTo(0, {y})")
            self.page.wait_for_timeout(100)
            if time.monotonic() > deadline:
                raise AssertionError(f"{url}: figures still not rendered after {timeout_s} s of scrolling")
        self.page.evaluate("window.scrollTo(0, 0)")


@pytest.fixture
def watched(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    yield PageWatch(page)
    context.close()
