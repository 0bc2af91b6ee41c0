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
import posixpath
import shutil
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from generator import figures, qk, views
from generator.figures import json_for_script
from generator.config import PATTERNS, Config, slug
from generator.errors import AtlasError
from generator.patterns import LABELS, MIXED, classify
from generator.pipeline import AtlasData, heads_json
from generator.texts import PATTERN_TEXT, THRESHOLD_REASON

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "templates"


# ----------------------------------------------------------------- page names

def head_doc(layer: int, head: int) -> str:
    return f"heads/layer-{layer:02d}-head-{head:02d}.md"


def layer_doc(layer: int) -> str:
    return f"layers/layer-{layer:02d}.md"


def pattern_doc(pattern: str) -> str:
    return f"patterns/{pattern.replace('_', '-')}.md"


def pair_doc(index: int, pair_id: str, width: int) -> str:
    return f"pairs/p{index:0{width}d}-{slug(pair_id, 40)}.md"


def url_of(doc: str) -> str:
    """The URL of a docs file under ``use_directory_urls`` (relative to the site root)."""
    if doc == "index.md":
        return ""
    if doc.endswith("/index.md"):
        return doc[: -len("index.md")]
    return doc[: -len(".md")] + "/"


def rel(from_doc: str, to: str) -> str:
    """Link from page ``from_doc`` to ``to`` (a docs ``.md`` file or a site
    path such as ``data/heads.json``), relative, so the site works under any
    subpath."""
    target = url_of(to) if to.endswith(".md") else to
    base = url_of(from_doc)
    out = posixpath.relpath("/" + target, "/" + base) if target else posixpath.relpath("/", "/" + base)
    if out == ".":
        out = "./"
    elif target.endswith("/") and not out.endswith("/"):
        out += "/"
    return out


# --------------------------------------------------------------------- render

@dataclass
class Page:
    doc: str
    template: str
    title: str
    context: dict


class _Figures:
    """Numbers the figures of one page: ids are stable (page + position)."""

    def __init__(self, page: str):
        self.prefix = "fig-" + slug(page.replace("/", "-").removesuffix(".md"), 60)
        self.count = 0

    def __call__(self, fig, css: str = "", **extra) -> Markup:
        self.count += 1
        fid = f"{self.prefix}-{self.count}"
        payload = figures.embed_json(fig, **extra)
        return Markup(
            f'<div class="atlas-figure {css}" id="{fid}" data-spec="{fid}-spec"></div>\n'
            f'<script type="application/json" id="{fid}-spec">{payload}</script>'
        )

    def view(self, kind: str, payload: dict) -> Markup:
        """An interactive view (``headview``, ``modelview``, ``qkview``) of ``views.js``."""
        self.count += 1
        vid = f"{self.prefix}-{kind}-{self.count}"
        return Markup(
            f'<div class="atlas-{kind}" id="{vid}" data-spec="{vid}-spec"></div>\n'
            f'<script type="application/json" id="{vid}-spec">{json_for_script(payload)}</script>'
        )


def _env() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        autoescape=select_autoescape(enabled_extensions=("html", "md", "j2"), default=True),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = lambda v, d=2: "n/a" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.{d}f}"
    env.filters["pct"] = lambda v: "n/a" if v is None else f"{100 * v:.0f}%"
    env.globals.update(PATTERNS=PATTERNS, LABELS=LABELS, TITLES=figures.PATTERN_TITLES, COLORS=figures.PATTERN_COLORS)
    return env


class SiteModel:
    """Derived, render-ready views of :class:`AtlasData` shared by all pages."""

    #: Pairs longer than this get no all-heads views on their page (the data
    #: grows with layers x heads x n^2: 19 MB for 72 heads at n = 512).
    view_max_tokens = 160

    def __init__(self, cfg: Config, data: AtlasData):
        self.cfg, self.data = cfg, data
        self.width = max(4, len(str(len(data.pairs) - 1)))
        self.head_scores = data.sums.mean()
        self.labels = np.array([[data.head(l, h).label for h in range(data.n_heads)] for l in range(data.layers)],
                               dtype=object)
        self.pair_docs = {i: pair_doc(i, data.pairs[i].id, self.width) for i in sorted(data.showcase.attention)}
        self.thresholds = data.thresholds

        self.corpus_name = os.path.relpath(cfg.corpus_path, cfg.path.resolve().parent)
        self.truncated_count = int(sum(data.truncated))
        self.label_counts = Counter(h.label for h in data.heads)

    # --- navigation helpers used by the templates
    def grid_links(self, from_doc: str) -> list[list[str]]:
        """``[layers][heads]`` relative links to the head pages."""
        return [[rel(from_doc, head_doc(l, h)) for h in range(self.data.n_heads)] for l in range(self.data.layers)]

    def prev_head(self, layer: int, head: int) -> tuple[int, int] | None:
        k = layer * self.data.n_heads + head - 1
        return divmod(k, self.data.n_heads) if k >= 0 else None

    def next_head(self, layer: int, head: int) -> tuple[int, int] | None:
        k = layer * self.data.n_heads + head + 1
        return divmod(k, self.data.n_heads) if k < self.data.layers * self.data.n_heads else None

    def ratio(self, score: float | None, pattern: str) -> str:
        t = self.thresholds[pattern]
        return "n/a" if score is None or t == 0 else f"{score / t:.2f}"

    def defined_count(self, layer: int, head: int, pattern: str) -> int:
        return int(self.data.sums.count[layer, head, PATTERNS.index(pattern)])

    def count_labels(self, labels: np.ndarray) -> list[tuple[str, int]]:
        counts = Counter(labels.reshape(-1).tolist())
        return [(name, counts[name]) for name in LABELS if counts.get(name)]

    def layer_label_counts(self, layer: int) -> list[tuple[str, int]]:
        return self.count_labels(self.labels[layer])

    def heads_with(self, pattern: str):
        """Heads labelled ``pattern``, best score first (mixed: head order)."""
        hs = [h for h in self.data.heads if h.label == pattern]
        if pattern != MIXED:
            hs.sort(key=lambda h: (-(h.scores[pattern] or 0.0), h.layer, h.head))
        return hs

    def top_by(self, pattern: str, k: int):
        hs = [h for h in self.data.heads if h.scores[pattern] is not None]
        return sorted(hs, key=lambda h: (-h.scores[pattern], h.layer, h.head))[:k]

    def heads_showing(self, index: int):
        return [h for h in self.data.heads if index in h.examples]

    def pattern_text(self, pattern: str) -> str:
        return PATTERN_TEXT[pattern]

    def threshold_reason(self, pattern: str) -> str:
        return THRESHOLD_REASON[pattern]

    @property
    def versions(self) -> list[tuple[str, str]]:
        from importlib.metadata import PackageNotFoundError, version

        from generator import __version__

        out = [("attention-atlas", __version__)]
        for name in ("torch", "transformers", "tokenizers", "plotly", "mkdocs-material"):
            try:
                out.append((name, version(name)))
            except PackageNotFoundError:
                out.append((name, "not installed"))
        return out

    def corpus_rows_json(self, from_doc: str) -> Markup:
        """The corpus table's rows as inert JSON (``<``, ``>``, ``&`` escaped)."""
        rows = []
        for i, pair in enumerate(self.data.pairs):
            top, count = self.top_pattern(i)
            link = self.pair_link(from_doc, i)
            rows.append({"index": i, "id": pair.id, "a": pair.a, "b": pair.b, "top": top, "heads": count,
                         "tags": " ".join(pair.tags), "href": link})
        return Markup(json_for_script(rows))

    # --- the interactive views (issue: look inside a head)
    def head_view(self, layer: int, head: int) -> dict:
        """Head view of one head on its best example pair."""
        ex = self.data.head(layer, head).examples[0]
        return views.head_view_data(self.data.showcase.attention[ex][layer, head], self.data.layouts[ex])

    def pair_view(self, index: int, from_doc: str) -> dict:
        """All heads of one pair: head view with selectors, and the model view."""
        labels = self.pair_labels(index).tolist()
        return views.head_view_data(self.data.showcase.attention[index], self.data.layouts[index],
                                    head_labels=labels, head_links=self.grid_links(from_doc))

    def best_query(self, layer: int, head: int) -> int:
        """The query position that puts most attention on its pattern's keys."""
        h = self.data.head(layer, head)
        ex = h.examples[0]
        cells = qk.pattern_pairs(self.data.layouts[ex], h.example_pattern)
        mass = (self.data.showcase.attention[ex][layer, head] * cells).sum(-1)
        return int(np.argmax(mass))

    def _head_qk(self, layer: int, head: int):
        """``(example pair index, q [n, d], k [n, d])`` of a head's showcase pair, or ``None``."""
        ex = self.data.head(layer, head).examples[0]
        if ex not in self.data.showcase.qk:
            return None
        q, k = self.data.showcase.qk[ex]
        return ex, q[layer, head], k[layer, head]

    def qk_view(self, layer: int, head: int) -> dict | None:
        found = self._head_qk(layer, head)
        if found is None:
            return None
        ex, q, k = found
        return views.qk_view_data(q, k, self.data.showcase.attention[ex][layer, head], self.data.layouts[ex],
                                  self.best_query(layer, head))

    def neurons(self, layer: int, head: int) -> dict | None:
        found = self._head_qk(layer, head)
        if found is None:
            return None
        ex, q, k = found
        return qk.pattern_neurons(q, k, self.data.layouts[ex], self.data.head(layer, head).example_pattern)

    # --- which heads matter (analysis section)
    def objective_text(self) -> str:
        an = self.data.analysis
        what = {"similarity": "cosine similarity of the two sentences' mean-pooled embeddings",
                "mlm": "masked-LM pseudo-log-likelihood", "classification": "sequence-classification accuracy"}
        metric = {"spearman": "Spearman correlation with the pairs' labels",
                  "mean_similarity": "mean similarity (no labels: changes are mean absolute changes)",
                  "pll_per_token": "pseudo-log-likelihood per token", "accuracy": "accuracy"}
        return f"{an.objective}: {what.get(an.objective, an.objective)}; metric {metric.get(an.metric_name, an.metric_name)}"

    def head_link_of(self, from_doc: str):
        return lambda l, h: rel(from_doc, head_doc(l, h))

    def _importance_order(self) -> list[tuple[int, int]]:
        an = self.data.analysis
        signed = an.ablation.reshape(-1)
        if an.metric_name in ("mean_similarity",):
            signed = -signed
        order = np.argsort(signed, kind="stable")
        return [divmod(int(k), self.data.n_heads) for k in order]

    def most_important(self, k: int) -> list[tuple[int, int]]:
        return self._importance_order()[:k]

    def importance_rank(self, layer: int, head: int) -> int:
        return self._importance_order().index((layer, head)) + 1

    def biggest_group(self):
        return max(self.data.analysis.groups, key=lambda g: (abs(g.change), -len(g.heads)))

    def attribution_style(self, attributions: np.ndarray, i: int) -> str:
        m = float(np.max(np.abs(attributions))) or 1.0
        v = float(attributions[i]) / m
        color = "214, 39, 40" if v >= 0 else "31, 95, 168"
        return f"background: rgba({color}, {abs(v):.3f})"

    def pair_n(self, index: int) -> int:
        return self.data.layouts[index].n

    def impact_max(self, index: int) -> float:
        m = self.data.analysis.impact[index]
        return float(np.nanmax(m)) if np.isfinite(m).any() else 1.0

    def head_xy(self) -> tuple[np.ndarray, np.ndarray]:
        c = self.data.analysis.head_coords.reshape(self.data.layers, self.data.n_heads, 2)
        return c[..., 0], c[..., 1]

    def pair_labels(self, index: int) -> np.ndarray:
        """``[layers, heads]`` labels of every head on one pair."""
        s = self.data.pair_scores[index]
        return np.array([[classify(s[l, h], self.thresholds) for h in range(self.data.n_heads)]
                         for l in range(self.data.layers)], dtype=object)

    def top_pattern(self, index: int) -> tuple[str, int]:
        """The label most heads give this pair (``mixed`` only if nothing else), and its head count."""
        counts = Counter(self.pair_labels(index).reshape(-1).tolist())
        named = [(c, name) for name, c in counts.items() if name != MIXED]
        if named:
            c, name = max(named, key=lambda t: (t[0], -LABELS.index(t[1])))
            return name, c
        return MIXED, counts.get(MIXED, 0)

    def pair_link(self, from_doc: str, index: int) -> str | None:
        doc = self.pair_docs.get(index)
        return rel(from_doc, doc) if doc else None


def build_pages(cfg: Config, data: AtlasData) -> tuple[list[Page], SiteModel]:
    """The list of pages to render (docs path, template, nav title, context)."""
    sm = SiteModel(cfg, data)
    pages = [Page("index.md", "index.md.j2", "Home", {}), Page("methodology.md", "methodology.md.j2", "Methodology", {})]
    for pattern in LABELS:
        pages.append(Page(pattern_doc(pattern), "pattern.md.j2", figures.PATTERN_TITLES[pattern], {"pattern": pattern}))
    for layer in range(data.layers):
        pages.append(Page(layer_doc(layer), "layer.md.j2", f"Layer {layer}", {"layer": layer}))
        for head in range(data.n_heads):
            h = data.head(layer, head)
            pages.append(Page(head_doc(layer, head), "head.md.j2", f"Head {layer}-{head} · {h.label}",
                              {"layer": layer, "head": head}))
    if data.analysis is not None and (data.analysis.ablation is not None or data.analysis.groups):
        pages.append(Page("importance.md", "importance.md.j2", "Importance", {}))
    pages.append(Page("pairs/index.md", "corpus.md.j2", "All pairs", {}))
    for index, doc in sm.pair_docs.items():
        pages.append(Page(doc, "pair.md.j2", f"p{index:0{sm.width}d} · {slug(data.pairs[index].id, 40)}",
                          {"index": index}))
    return pages, sm


def _nav(pages: list[Page], data: AtlasData) -> list:
    by_doc = {p.doc: p for p in pages}
    nav: list = [{"Home": "index.md"}]
    nav.append({"Patterns": [{by_doc[pattern_doc(p)].title: pattern_doc(p)} for p in LABELS]})
    layers = []
    for layer in range(data.layers):
        entries = [{"Layer overview": layer_doc(layer)}]
        entries += [{by_doc[head_doc(layer, h)].title: head_doc(layer, h)} for h in range(data.n_heads)]
        layers.append({f"Layer {layer}": entries})
    nav.append({"Layers": layers})
    # Pair pages are reached from the corpus table and the head pages; listing
    # them in the navigation would repeat every pair on every page.
    nav.append({"Pairs": "pairs/index.md"})
    if "importance.md" in by_doc:
        nav.append({"Importance": "importance.md"})
    nav.append({"Methodology": "methodology.md"})
    return nav


def render_docs(cfg: Config, data: AtlasData, docs: Path, site_out: Path, workers: int = 4) -> Path:
    """Write every page, the assets and ``mkdocs.yml`` under ``docs.parent``.

    Returns the path of the written ``mkdocs.yml`` (whose ``site_dir`` is
    ``site_out``). Pages render in a thread pool (Jinja and Plotly's JSON
    encoder release no GIL, but file writes overlap).
    """
    env = _env()
    pages, sm = build_pages(cfg, data)
    docs.mkdir(parents=True, exist_ok=True)
    common = {"sm": sm, "data": data, "cfg": cfg, "head_doc": head_doc, "layer_doc": layer_doc,
              "pattern_doc": pattern_doc, "rel": rel, "figures": figures, "np": np, "zip": zip}

    def render(page: Page) -> None:
        template = env.get_template(page.template)
        text = template.render(page=page, fig=_Figures(page.doc), **common, **page.context)
        target = docs / page.doc
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(render, pages))

    assets = docs / "assets"
    assets.mkdir(exist_ok=True)
    import plotly

    shutil.copyfile(Path(plotly.__file__).parent / "package_data" / "plotly.min.js", assets / "plotly.min.js")
    for name in ("atlas.js", "views.js", "atlas.css"):
        shutil.copyfile(TEMPLATES / "assets" / name, assets / name)
    data_dir = docs / "data"
    data_dir.mkdir(exist_ok=True)
    corpus_rel = os.path.relpath(cfg.corpus_path, cfg.path.resolve().parent)
    (data_dir / "heads.json").write_text(
        heads_json(data, corpus_rel, lambda l, h: url_of(head_doc(l, h))), encoding="utf-8")

    raw = cfg.raw
    mk = env.get_template("mkdocs.yml.j2").render(
        site=raw.site, docs_dir=str(docs), site_dir=str(site_out), custom_dir=str(TEMPLATES / "overrides"),
        nav=_nav(pages, data))
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
