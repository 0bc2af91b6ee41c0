"""Scores -> pages: Jinja renders the Markdown/HTML pages and ``mkdocs.yml``
into a fresh docs folder, ``mkdocs build --strict`` writes a temporary site,
and only a complete build is swapped into place.

Corpus text is untrusted. It only ever lands inside HTML elements written by
autoescaping Jinja templates (Markdown does not touch raw HTML blocks) or in
JSON with ``<``, ``>`` and ``&`` escaped; it never reaches Markdown syntax,
the navigation or page titles.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, TemplateError, select_autoescape

from generator.config import Config
from generator.errors import AtlasError
from generator.export import heads_json
from generator.links import HEADS_JSON, head_doc, url_of
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
        text = _render(env, page.template, page.doc, vm=page.view_model())
        target = docs / page.doc
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(write, pages))

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

    raw = cfg.raw
    mk = _render(env, "mkdocs.yml.j2", "mkdocs.yml",
                 site=raw.site, docs_dir=str(docs), site_dir=str(site_out), custom_dir=str(TEMPLATES / "overrides"),
                 nav=navigation(pages, data.layers, data.n_heads))
    config_file = docs.parent / "mkdocs.yml"
    config_file.write_text(mk, encoding="utf-8")
    return config_file


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
    work = Path(tempfile.mkdtemp(prefix="render-", dir=cfg.build_dir))
    new_site = Path(tempfile.mkdtemp(prefix=f".{cfg.site_dir.name}-new-", dir=cfg.site_dir.parent))
    try:
        # mkdtemp makes a 0700 folder; the published site gets mkdir's usual mode
        umask = os.umask(0)
        os.umask(umask)
        new_site.chmod(0o777 & ~umask)
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
        swap_into_place(new_site, cfg.site_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if new_site.exists():
            shutil.rmtree(new_site, ignore_errors=True)
    return cfg.site_dir


def _source_date(cfg: Config) -> int:
    """Build date for the sitemap: the newest of the config's and corpus's
    mtimes, so that two builds of the same files are byte-identical."""
    return int(max(cfg.path.stat().st_mtime, cfg.corpus_path.stat().st_mtime))
