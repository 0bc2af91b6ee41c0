"""Scores -> pages: Jinja renders the Markdown/HTML pages and ``mkdocs.yml``
into a fresh docs folder, ``mkdocs build --strict`` writes a temporary site,
and only a complete build is swapped into place.

Corpus text is untrusted. It only ever lands inside HTML elements written by
autoescaping Jinja templates (Markdown does not touch raw HTML blocks) or in
JSON with ``<``, ``>`` and ``&`` escaped; it never reaches Markdown syntax,
the navigation or page titles.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import re
import secrets
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

from jinja2 import Environment, FileSystemLoader, StrictUndefined, TemplateError, select_autoescape

from generator import fragments
from generator.config import Config
from generator.errors import AtlasError
from generator.export import heads_json, pair_scores_csv_gz, pair_scores_csv_gz_of
from generator.links import HEADS_JSON, PAIR_SCORES_CSV, head_doc, url_of
from generator.pages import Page, navigation, site_pages
from generator.pages.common import SiteContext, num, pct
from generator.pipeline import AtlasData
from generator.registry import LABEL_INFO

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "templates"
#: Files of ``templates/assets/`` copied as they are; ``*.j2`` ones are rendered.
STATIC_ASSETS = ("atlas.js", "views.js")


def _env() -> Environment:
    """Jinja with autoescaping everywhere and only formatting filters."""
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        autoescape=select_autoescape(enabled_extensions=("html", "md", "j2"), default=True),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = num
    env.filters["pct"] = pct
    return env


def _render(env: Environment, template: str, page: str, **context) -> str:
    """Render one template; a template error becomes an :class:`AtlasError` naming the page."""
    try:
        return env.get_template(template).render(**context)
    except TemplateError as exc:
        raise AtlasError(f"page {page} (template templates/{template}): {type(exc).__name__}: {exc}") from None


def render_docs(cfg: Config, data: AtlasData, docs: Path, site_out: Path, workers: int = 4) -> Path:
    """Write every page, the assets, ``data/heads.json`` and ``mkdocs.yml``.

    Args:
        cfg: the validated configuration.
        data: the computed atlas (scores, labels, example attention, analyses).
        docs: the (new, empty) MkDocs docs folder to write into.
        site_out: the folder ``mkdocs.yml`` will tell MkDocs to build into.
        workers: threads rendering pages (Jinja and Plotly's JSON encoder hold
            the GIL, but file writes overlap).
    Returns:
        The path of the written ``mkdocs.yml`` (in ``docs.parent``).
    Raises:
        AtlasError: a template fails; the message names the page and template.
    """
    env = _env()
    ctx = SiteContext(cfg, data)
    pages = site_pages(ctx)
    docs.mkdir(parents=True, exist_ok=True)

    def write(page: Page) -> None:
        text = _render(env, page.template, page.doc, vm=page.view_model(),
                       fragment=fragments.Fragments(docs, page.doc))
        target = docs / page.doc
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")

    csv_pool = _export_process(data)
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        # submitting starts the workers; a Ctrl-C inside the executors' own bookkeeping could leave a thread
        # (or process) that shutdown() does not know of, writing into docs/ after the cleanup removed it
        with interrupts_held() as held:
            csv_gz: Future | None = None
            if csv_pool is not None:  # formatted and compressed on another core while the pages render
                csv_gz = csv_pool.submit(pair_scores_csv_gz_of, [p.id for p in data.pairs], data.pair_scores,
                                         data.thresholds)
            rendered = [pool.submit(write, page) for page in pages]
        if held:
            raise KeyboardInterrupt
        for future in rendered:
            future.result()
        csv_bytes = None
        if csv_gz is not None:
            try:
                csv_bytes = csv_gz.result()
            except BrokenProcessPool:  # the process died (killed, out of memory): write it here instead
                log.warning("the process writing %s.gz stopped; writing it in the build's own process",
                            PAIR_SCORES_CSV)
        if csv_bytes is None:
            csv_bytes = pair_scores_csv_gz(data)
    finally:  # on an error or Ctrl-C, pages not yet started are dropped and the running ones finish before cleanup
        pool.shutdown(wait=True, cancel_futures=True)
        if csv_pool is not None:
            csv_pool.shutdown(wait=True, cancel_futures=True)

    assets = docs / "assets"
    assets.mkdir(exist_ok=True)
    import plotly

    shutil.copyfile(Path(plotly.__file__).parent / "package_data" / "plotly.min.js", assets / "plotly.min.js")
    for name in STATIC_ASSETS:
        shutil.copyfile(TEMPLATES / "assets" / name, assets / name)
    (assets / "atlas.css").write_text(
        _render(env, "assets/atlas.css.j2", "assets/atlas.css", labels=list(LABEL_INFO.values())), encoding="utf-8")
    heads_file = docs / HEADS_JSON
    heads_file.parent.mkdir(exist_ok=True)
    heads_file.write_text(heads_json(data, ctx.corpus_name, lambda l, h: url_of(head_doc(l, h))), encoding="utf-8")
    (docs / (PAIR_SCORES_CSV + ".gz")).write_bytes(csv_bytes)

    raw = cfg.raw
    mk = _render(env, "mkdocs.yml.j2", "mkdocs.yml",
                 site=raw.site, docs_dir=str(docs), site_dir=str(site_out), custom_dir=str(TEMPLATES / "overrides"),
                 hooks=[str(Path(fragments.__file__).resolve())],
                 nav=navigation(pages, data.layers, data.n_heads))
    config_file = docs.parent / "mkdocs.yml"
    config_file.write_text(mk, encoding="utf-8")
    return config_file


_BASE_SCRIPT = """<script>
/* GitHub Pages serves this page at any missing URL, at any depth, so its links cannot be relative
   to where it is. Find the site's root in the URL (the prefix before a top-level folder of this
   site, else the first folder of a project site, else /) and make every link relative to it. */
(function () {
  var top = %s, parts = location.pathname.split("/").filter(Boolean), root = [];
  for (var i = 0; i < parts.length; i++) { if (top.indexOf(parts[i]) >= 0) break; root.push(parts[i]); }
  if (root.length === parts.length) root = parts.length > 1 ? parts.slice(0, 1) : [];
  document.write('<base href="/' + root.map(encodeURIComponent).join("/") + (root.length ? "/" : "") + '">');
})();
</script>"""


#: Rows of ``data/pair_scores.csv.gz`` (pairs x heads) from which it is written by a process of its
#: own (forked) while the pages render: about 11 s per million rows on one core.
EXPORT_PROCESS_ROWS = 200_000


def _export_process(data: AtlasData) -> ProcessPoolExecutor | None:
    """A one-process pool for the per-pair CSV, when the corpus is large enough and a second core exists."""
    rows = len(data.pairs) * data.layers * data.n_heads
    if rows < EXPORT_PROCESS_ROWS or (os.cpu_count() or 1) < 2 or "fork" not in multiprocessing.get_all_start_methods():
        return None
    # fork, not spawn: a spawned process would import the caller's main module again (a user's script
    # calling run_build without a __main__ guard would run twice); the child only runs numpy, csv and
    # gzip, and is forked before the render threads start
    return ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("fork"))


def relocatable_404(page: Path, top_level: list[str], prefix: str = "/") -> None:
    """Make MkDocs' ``404.html`` work under any subpath (``https://user.github.io/repo/``).

    MkDocs writes the 404 page's links as absolute paths (``/assets/...``) when no ``site_url``
    is set, which break under a subpath. They become root-relative to a ``<base>`` element that a
    small inline script sets from the URL the page is served at; Material's own config (site root,
    search worker) is resolved against that ``<base>`` too.

    Args:
        page: the built ``404.html`` (left alone when missing).
        top_level: the names of the site's top-level files and folders.
        prefix: the path MkDocs put before every link (``/``, or the path of ``site.site_url``).
    """
    if not page.exists():
        return
    text = page.read_text(encoding="utf-8")
    prefix = prefix if prefix.endswith("/") else prefix + "/"
    text = re.sub(r'(\s(?:href|src))="' + re.escape(prefix) + r'(?!/)', r'\1="', text)
    script = _BASE_SCRIPT % json.dumps(sorted(n for n in top_level if n != "404.html"))
    text = text.replace("<head>", "<head>\n" + script, 1)
    # Material reads its site root and search worker from a JSON config, resolved against the
    # page's own URL: make them relative to the <base> too, before Material's script runs
    config = re.search(r'(<script id="__config" type="application/json">)(.*?)(</script>)', text, re.S)
    if config:
        doc = json.loads(config.group(2))
        doc["base"] = ""
        if isinstance(doc.get("search"), str) and doc["search"].startswith(prefix):
            doc["search"] = doc["search"][len(prefix):]
        fix = ("<script>(function () { var c = document.getElementById('__config'), j = JSON.parse(c.textContent);"
               " j.base = new URL(j.base || '.', document.baseURI).href;"
               " if (j.search) j.search = new URL(j.search, document.baseURI).href;"
               " c.textContent = JSON.stringify(j); })();</script>")
        text = (text[:config.start()] + config.group(1) + json.dumps(doc) + config.group(3) + fix
                + text[config.end():])
    page.write_text(text, encoding="utf-8")


def mkdocs_build(config_file: Path) -> None:
    """Run ``mkdocs build --strict`` in-process. Raises :class:`AtlasError`
    with MkDocs' message when it fails (a warning counts as failure)."""
    from mkdocs.commands.build import build
    from mkdocs.config import load_config
    from mkdocs.exceptions import MkDocsException

    mk_logger = logging.getLogger("mkdocs")
    previous = mk_logger.level
    mk_logger.setLevel(logging.WARNING)
    try:
        mkcfg = load_config(config_file=str(config_file), strict=True)
        build(mkcfg)
    except MkDocsException as exc:
        raise AtlasError(f"mkdocs build failed: {exc}") from None
    except SystemExit as exc:  # mkdocs' Abort on strict warnings
        raise AtlasError(f"mkdocs build --strict failed ({exc})") from None
    finally:
        mk_logger.setLevel(previous)


def swap_into_place(new_site: Path, site_dir: Path) -> None:
    """Replace ``site_dir`` with ``new_site`` by two renames on one file system;
    the old site is removed only after the new one is in place."""
    old = None
    if site_dir.exists():
        old = site_dir.with_name(f".{site_dir.name}-old-{os.getpid()}-{time.monotonic_ns()}")
        os.replace(site_dir, old)
    try:
        os.replace(new_site, site_dir)
    except BaseException:  # an OSError, or Ctrl-C between the two renames
        if old is not None:
            os.replace(old, site_dir)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def build_site(cfg: Config, data: AtlasData, timings: dict[str, float] | None = None) -> Path:
    """Render, build and atomically publish the site to ``cfg.site_dir``.

    Everything is written to temporary folders first; on any failure
    (template error, mkdocs error, Ctrl-C) they are removed and an existing
    site stays untouched. Returns ``cfg.site_dir``.
    """
    timings = timings if timings is not None else {}
    cfg.build_dir.mkdir(parents=True, exist_ok=True)
    cfg.site_dir.parent.mkdir(parents=True, exist_ok=True)
    # the names are chosen before the folders are made, so the finally below knows them even when a Ctrl-C
    # lands inside the mkdir (tempfile.mkdtemp would be interrupted after creating its folder, before returning it)
    tag = f"{os.getpid()}-{secrets.token_hex(4)}"
    work = cfg.build_dir / f"render-{tag}"
    new_site = cfg.site_dir.parent / f".{cfg.site_dir.name}-new-{tag}"
    published = False
    try:
        work.mkdir(mode=0o700)
        new_site.mkdir()  # mkdir's usual mode (umask applied), as the published site should have
        t = time.perf_counter()
        config_file = render_docs(cfg, data, work / "docs", new_site)
        timings["render_s"] = time.perf_counter() - t
        t = time.perf_counter()
        # the sitemap's date: the caller's SOURCE_DATE_EPOCH, else this build's
        # inputs' (set for this build only, not left for the next one)
        epoch = os.environ.get("SOURCE_DATE_EPOCH")
        os.environ["SOURCE_DATE_EPOCH"] = epoch or str(_source_date(cfg))
        try:
            mkdocs_build(config_file)
        finally:
            if epoch is None:
                os.environ.pop("SOURCE_DATE_EPOCH", None)
        timings["mkdocs_s"] = time.perf_counter() - t
        relocatable_404(new_site / "404.html", [p.name for p in new_site.iterdir()],
                        urlsplit(cfg.raw.site.site_url or "/").path or "/")
        swap_into_place(new_site, cfg.site_dir)
        published = True
    finally:
        with interrupts_held() as held:  # a Ctrl-C here would cut the cleanup short and leave a folder behind
            shutil.rmtree(work, ignore_errors=True)
            if new_site.exists():
                shutil.rmtree(new_site, ignore_errors=True)
        if held and published:  # otherwise an error or an earlier Ctrl-C is already on its way out
            log.warning("Ctrl-C came after the new site was published; it stays published")
    return cfg.site_dir


@contextmanager
def interrupts_held() -> Iterator[list[int]]:
    """Hold Ctrl-C (SIGINT) while the block runs.

    Returns:
        A context manager yielding a list that holds the signal number once a
        SIGINT came during the block (empty otherwise). Outside the main thread,
        where Python cannot set signal handlers, it holds nothing back.
    """
    if threading.current_thread() is not threading.main_thread():
        yield []
        return
    came: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: came.append(signum))
    try:
        yield came
    finally:
        signal.signal(signal.SIGINT, previous)


def _source_date(cfg: Config) -> int:
    """Build date for the sitemap: the newest of the config's and corpus's
    mtimes, so that two builds of the same files are byte-identical."""
    return int(max(cfg.path.stat().st_mtime, cfg.corpus_path.stat().st_mtime))
