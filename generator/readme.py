"""The README's generated sections.

A generated section is the text between two HTML comments,
``<!-- NAME:start -->`` and ``<!-- NAME:end -->``, rewritten by the module
that owns its data: the Performance section by :mod:`generator.bench`
(``python -m generator.bench --readme``), the Configuration section by
:mod:`generator.config` (``python -m generator.config --readme``). Nothing
between the markers is edited by hand.
"""

from __future__ import annotations

from pathlib import Path

#: The project's README.
README = Path(__file__).resolve().parent.parent / "README.md"


def markers(name: str) -> tuple[str, str]:
    """The start and end comments of section ``name``."""
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def current_section(text: str, name: str) -> str | None:
    """The section ``name`` of ``text``, markers included, or ``None`` when
    its markers are absent or out of order."""
    start, end = markers(name)
    if start in text and end in text and text.index(start) < text.index(end):
        return start + text.split(start, 1)[1].split(end, 1)[0] + end
    return None


def replace_section(text: str, name: str, section: str, heading: str) -> str:
    """``text`` with section ``name`` replaced by ``section`` (markers
    included); when the markers are absent, ``heading`` and ``section`` are
    appended at the end."""
    old = current_section(text, name)
    if old is None:
        return text.rstrip("\n") + f"\n\n{heading}\n\n{section}\n"
    return text.replace(old, section, 1)


def update_readme(readme: Path, name: str, section: str, heading: str) -> None:
    """Rewrite section ``name`` of the file ``readme`` (see :func:`replace_section`)."""
    text = readme.read_text(encoding="utf-8")
    readme.write_text(replace_section(text, name, section, heading), encoding="utf-8")
