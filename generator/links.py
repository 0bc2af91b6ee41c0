"""Page names and relative links: where each page of the site lives.

Docs paths are MkDocs source files (``heads/layer-02-head-00.md``); with
``use_directory_urls`` each is served at a folder URL (``heads/layer-02-head-00/``).
Every link the site writes is relative, so the site works under any subpath
(``https://user.github.io/repo/``).
"""

from __future__ import annotations

import posixpath

from generator.config import slug

HOME = "index.md"
METHODOLOGY = "methodology.md"
IMPORTANCE = "importance.md"
COMPARE = "compare.md"
CORPUS = "pairs/index.md"
HEADS_JSON = "data/heads.json"
PAIR_SCORES_CSV = "data/pair_scores.csv"  # written gzip-compressed, with ".gz"
HEADS_INDEX = "heads/index.md"
HEADS_COMPARE = "heads/compare.md"


def head_doc(layer: int, head: int) -> str:
    """Docs path of a head's page (layer and head 0-indexed)."""
    return f"heads/layer-{layer:02d}-head-{head:02d}.md"


def layer_doc(layer: int) -> str:
    """Docs path of a layer's page."""
    return f"layers/layer-{layer:02d}.md"


def pattern_doc(pattern: str) -> str:
    """Docs path of a pattern's (or ``mixed``'s) page."""
    return f"patterns/{pattern.replace('_', '-')}.md"


def pair_doc(index: int, pair_id: str, width: int) -> str:
    """Docs path of a pair's page: corpus index zero-padded to ``width`` digits plus a safe slug of its id."""
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
