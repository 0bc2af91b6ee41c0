"""Large blocks of finished HTML that go into a page after MkDocs has built it.

A page template marks a block with ``{% call fragment("name") %} ... {% endcall %}``:
the block is written to a file of its own and the page's Markdown holds only a
marker comment. MkDocs' hook :func:`on_post_page` (this module is listed under
``hooks:`` in the generated ``mkdocs.yml``) puts the block back into the
finished HTML. So a block of thousands of rows (the corpus table) is not parsed
by Markdown's HTML parser nor by the search plugin's (at 10,000 pairs they took
about 6 s of the MkDocs build), and is not in the search index (the table has a
filter of its own). The block must be complete HTML: Markdown does not touch it.
"""

from __future__ import annotations

import re
from pathlib import Path

from markupsafe import Markup

#: The folder, next to ``docs_dir``, that holds the fragments.
FOLDER = "fragments"
_MARKER = re.compile(r"<!-- atlas-fragment:([a-z0-9-]+) -->")
_NAME = re.compile(r"[a-z0-9-]+")


def fragment_file(docs: Path, doc: str, name: str) -> Path:
    """Where the fragment ``name`` of page ``doc`` (a path under ``docs``, such as ``pairs/index.md``) is kept."""
    return docs.parent / FOLDER / f"{doc}.{name}.html"


class Fragments:
    """The ``fragment`` callable of one page's template (see the module doc).

    Args:
        docs: the ``docs_dir`` being written.
        doc: the page's path under it.
    Raises:
        ValueError: a fragment name other than lower-case letters, digits and
            hyphens, or the same name twice on one page.
    """

    def __init__(self, docs: Path, doc: str):
        self.docs = docs
        self.doc = doc
        self.names: set[str] = set()

    def __call__(self, name: str, caller) -> Markup:
        if not _NAME.fullmatch(name) or name in self.names:
            raise ValueError(f"fragment name {name!r}: lower-case letters, digits and hyphens, once per page")
        self.names.add(name)
        path = fragment_file(self.docs, self.doc, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(str(caller()), encoding="utf-8")
        return Markup(f"\n<!-- atlas-fragment:{name} -->\n")


def on_post_page(output: str, page, config) -> str:
    """MkDocs hook: every marker of the page replaced by its fragment's HTML.

    Raises:
        FileNotFoundError: a marker whose fragment was not written (the page
            would otherwise silently lose its block).
    """
    docs = Path(config["docs_dir"])

    def block(match: re.Match) -> str:
        return fragment_file(docs, page.file.src_uri, match.group(1)).read_text(encoding="utf-8")

    return _MARKER.sub(block, output)
