"""Safe, bounded YAML loading that remembers where every value came from.

PyYAML parses; this module only adds three things the atlas needs for
untrusted input: a size limit checked before parsing, a refusal of YAML
aliases (the "billion laughs" alias bomb), and the line number of every node
so that validation errors can point at ``file:line``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from yaml.events import AliasEvent

from generator.errors import AtlasError

#: Largest YAML file the atlas reads, in bytes (20 MiB: about 100,000 pairs).
MAX_YAML_BYTES = 20 * 1024 * 1024


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases (``*name``) so no document can expand."""

    def compose_node(self, parent, index):  # noqa: D401 - PyYAML hook
        if self.check_event(AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None,
                None,
                "YAML aliases (*name) are not allowed in atlas files",
                event.start_mark,
            )
        return super().compose_node(parent, index)


@dataclass(frozen=True)
class LoadedYaml:
    """A parsed YAML document and its node tree (for line numbers)."""

    path: Path
    data: Any
    node: yaml.Node | None

    def line_of(self, loc: tuple[Any, ...]) -> int | None:
        """1-based line of the value at ``loc`` (keys / list indices), or the
        nearest enclosing value that exists; ``None`` for an empty document."""
        node = self.node
        line = node.start_mark.line + 1 if node is not None else None
        for part in loc:
            child = None
            if isinstance(node, yaml.MappingNode):
                for key_node, value_node in node.value:
                    if key_node.value == part:
                        child = value_node
                        break
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
                if 0 <= part < len(node.value):
                    child = node.value[part]
            if child is None:
                break
            node = child
            line = node.start_mark.line + 1
        return line


def load_yaml(path: Path, what: str) -> LoadedYaml:
    """Read ``path`` as one YAML document.

    ``what`` names the file's role in messages ("config", "corpus").
    Raises :class:`AtlasError` (naming the file and line) when the file is
    missing, larger than :data:`MAX_YAML_BYTES`, not UTF-8, uses aliases, or
    is not valid YAML.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise AtlasError(f"{path}: {what} file not found") from None
    if size > MAX_YAML_BYTES:
        raise AtlasError(
            f"{path}: {what} file is {size:,} bytes, over the limit of {MAX_YAML_BYTES:,} bytes "
            f"({MAX_YAML_BYTES / 2**20:.0f} MiB); split the corpus or raise generator.yamlio.MAX_YAML_BYTES"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise AtlasError(f"{path}: {what} file is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        loader = _NoAliasLoader(text)
        try:
            node = loader.get_single_node()
        finally:
            loader.dispose()
        data = _NoAliasLoader(text).construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = exc.problem or exc.context or "invalid YAML"
        raise AtlasError(f"{path}{where}: YAML error in {what} file: {problem}") from None
    except yaml.YAMLError as exc:
        raise AtlasError(f"{path}: YAML error in {what} file: {exc}") from None
    return LoadedYaml(path=path, data=data, node=node)
