"""Safe, bounded YAML loading that remembers where every value came from.

PyYAML parses; this module only adds what the atlas needs for untrusted
input: a size limit checked before parsing, a refusal of YAML aliases (the
"billion laughs" alias bomb), a nesting-depth limit (a deeply nested document
would otherwise exhaust Python's recursion), a refusal of duplicate keys
(PyYAML silently keeps the last one), removal of the control characters YAML
cannot hold (with a warning naming the line), and the line number of every
node so that validation errors can point at ``file:line``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from yaml.events import AliasEvent, MappingEndEvent, MappingStartEvent, SequenceEndEvent, SequenceStartEvent

from generator.errors import AtlasError

log = logging.getLogger(__name__)

#: Largest YAML file the atlas reads, in bytes (20 MiB: about 100,000 pairs).
MAX_YAML_BYTES = 20 * 1024 * 1024

#: Deepest nesting of lists and mappings accepted (atlas files need 3 levels).
MAX_YAML_DEPTH = 32

#: Characters a YAML stream may not contain (C0/C1 controls other than tab,
#: newline, carriage return and NEL; DEL; U+FFFE/U+FFFF): PyYAML's own set.
_UNREADABLE = yaml.reader.Reader.NON_PRINTABLE

#: PyYAML's libyaml-based loader, where PyYAML was built with libyaml (see :func:`_compose`).
_FAST_LOADER = getattr(yaml, "CSafeLoader", None)


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases (``*name``) so no document can expand,
    documents nested deeper than :data:`MAX_YAML_DEPTH`, and duplicate keys."""

    _depth = 0

    def compose_node(self, parent, index):  # noqa: D401 - PyYAML hook
        if self.check_event(AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None,
                None,
                "YAML aliases (*name) are not allowed in atlas files",
                event.start_mark,
            )
        if self._depth >= MAX_YAML_DEPTH:
            raise yaml.composer.ComposerError(
                None, None, f"lists and mappings are nested more than {MAX_YAML_DEPTH} levels deep",
                self.peek_event().start_mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):  # noqa: D401 - PyYAML hook
        if isinstance(node, yaml.MappingNode):
            first_line: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=deep)
                try:
                    seen = key in first_line
                except TypeError:  # unhashable: PyYAML reports it below
                    continue
                if seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r} (first given on line {first_line[key]})",
                        key_node.start_mark)
                first_line[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


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


    def sub(self, loc: tuple[Any, ...]) -> LoadedYaml:
        """The value at ``loc`` (a path of mapping keys) as a document of its own, line numbers kept."""
        data, node = self.data, self.node
        for part in loc:
            data = data[part]
            node = next(v for k, v in node.value if k.value == part)
        return LoadedYaml(self.path, data, node)


def load_yaml(path: Path, what: str) -> LoadedYaml:
    """Read ``path`` as one YAML document.

    ``what`` names the file's role in messages ("config", "corpus").
    Raises :class:`AtlasError` (naming the file and line) when the file is
    missing, larger than :data:`MAX_YAML_BYTES`, not UTF-8, uses aliases,
    repeats a key, is nested deeper than :data:`MAX_YAML_DEPTH` or is not
    valid YAML. Control characters that YAML cannot hold are removed with a
    warning naming their lines.
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
    text = _strip_unreadable(path, text)
    try:
        node = _compose(text)
        data = _NoAliasLoader(text).construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = exc.problem or exc.context or "invalid YAML"
        raise AtlasError(f"{path}{where}: YAML error in {what} file: {problem}") from None
    except yaml.YAMLError as exc:
        raise AtlasError(f"{path}: YAML error in {what} file: {exc}") from None
    except RecursionError:
        raise AtlasError(f"{path}: YAML error in {what} file: nested too deeply") from None
    return LoadedYaml(path=path, data=data, node=node)


def _compose(text: str) -> yaml.Node | None:
    """The node tree of ``text`` (one document), under the rules of
    :class:`_NoAliasLoader`.

    libyaml (PyYAML's C parser, when PyYAML was built with it) composes a
    10,000-pair corpus about five times faster than the pure-Python parser;
    its event stream is checked first for aliases and depth. Whenever it
    finds anything wrong, the document is parsed again by the pure-Python
    loader, which raises the error, so that what a user reads (problem and
    line) does not depend on how PyYAML was built.
    """
    if _FAST_LOADER is not None:
        try:
            depth = 0
            for event in yaml.parse(text, Loader=_FAST_LOADER):
                if isinstance(event, AliasEvent):
                    raise yaml.YAMLError("alias")
                if isinstance(event, (MappingStartEvent, SequenceStartEvent)):
                    depth += 1
                    if depth >= MAX_YAML_DEPTH:  # leaves the check (scalars count as a level) to the loader below
                        raise yaml.YAMLError("depth")
                elif isinstance(event, (MappingEndEvent, SequenceEndEvent)):
                    depth -= 1
            loader = _FAST_LOADER(text)
            try:
                return loader.get_single_node()
            finally:
                loader.dispose()
        except yaml.YAMLError:
            pass  # the pure-Python loader below reports it
    loader = _NoAliasLoader(text)
    try:
        return loader.get_single_node()
    finally:
        loader.dispose()


def _strip_unreadable(path: Path, text: str) -> str:
    """``text`` without the characters a YAML stream may not contain, with
    one warning per affected line (at most 10, then a count). Line breaks
    are kept, so every later line number still points at the file."""
    if not _UNREADABLE.search(text):
        return text
    lines = text.split("\n")
    hits = [(n, sorted({f"U+{ord(c):04X}" for c in _UNREADABLE.findall(line)}))
            for n, line in enumerate(lines, 1) if _UNREADABLE.search(line)]
    for n, codes in hits[:10]:
        log.warning("%s:%d: removed control character(s) %s (not allowed in YAML)", path, n, ", ".join(codes))
    if len(hits) > 10:
        log.warning("%s: removed control characters on %d more lines", path, len(hits) - 10)
    return _UNREADABLE.sub("", text)
