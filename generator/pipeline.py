"""corpus -> model -> scores: the computing half of a build, with its cache.

A cache hit skips loading the model altogether, so a template-only change
re-renders in seconds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from generator import cache
from generator.analysis.run import AnalysisResults, analysis_pairs, run_analyses
from generator.compare import CompareResults, run_compare
from generator.compare import code_version as compare_version
from generator.config import Config, Pair, corpus_fingerprint
from generator.model import LoadedModel, effective_max_length, encode_pairs, load_model, resolve_model_path
from generator.patterns import PairLayout, ScoreSums
from generator.scoring import HeadSummary, Showcase, compute_showcase, score_corpus, summarise_heads

log = logging.getLogger(__name__)


@dataclass
class AtlasData:
    """Everything the pages show. Shapes: ``pair_scores`` ``[pairs, layers,
    heads, 7]``; ``heads`` in layer-major order (``layer * heads + head``)."""

    model: dict
    pairs: list[Pair]
    layouts: list[PairLayout]
    truncated: list[bool]
    pair_scores: np.ndarray
    sums: ScoreSums
    heads: list[HeadSummary]
    showcase: Showcase
    thresholds: dict[str, float]
    timings: dict[str, float] = field(default_factory=dict)
    analysis: AnalysisResults | None = None
    #: the comparison with ``compare.name_or_path`` when ``compare:`` is configured, else ``None``.
    compare: CompareResults | None = None

    @property
    def layers(self) -> int:
        return int(self.model["layers"])

    @property
    def n_heads(self) -> int:
        return int(self.model["heads"])

    def head(self, layer: int, head: int) -> HeadSummary:
        return self.heads[layer * self.n_heads + head]


def _analysis_version() -> str:
    """sha256 (16 hex) of the analysis modules' source (part of their cache key)."""
    h = hashlib.sha256()
    for path in sorted((Path(__file__).parent / "analysis").glob("*.py")):
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def model_identity(name_or_path: str) -> str:
    """A cheap identity of a checkpoint (path plus size/mtime of its files),
    computed without loading it."""
    resolved = Path(resolve_model_path(name_or_path)).expanduser()
    h = hashlib.sha256(name_or_path.encode())
    if resolved.is_dir():
        for f in sorted(resolved.rglob("*")):
            if f.is_file() and f.suffix in {".json", ".safetensors", ".bin", ".txt", ".model"}:
                st = f.stat()
                h.update(f"{f.relative_to(resolved)}:{st.st_size}:{int(st.st_mtime)}".encode())
    return h.hexdigest()[:16]


def _pack_layouts(layouts: list[PairLayout]) -> tuple[dict[str, np.ndarray], list[list[str]]]:
    arrays = {
        "lengths": np.array([lay.n for lay in layouts], dtype=np.int32),
        "segment": np.concatenate([lay.segment for lay in layouts]).astype(np.int8),
        "word": np.concatenate([lay.word for lay in layouts]).astype(np.int32),
        "special": np.concatenate([lay.special for lay in layouts]).astype(bool),
    }
    return arrays, [list(lay.tokens) for lay in layouts]


def _unpack_layouts(arrays: dict[str, np.ndarray], tokens: list[list[str]]) -> list[PairLayout]:
    out, start = [], 0
    for n, toks in zip(arrays["lengths"].tolist(), tokens):
        sl = slice(start, start + n)
        out.append(PairLayout(tuple(toks), arrays["segment"][sl].copy(), arrays["word"][sl].copy(),
                              arrays["special"][sl].copy()))
        start += n
    return out


class _ModelOnDemand:
    """Loads the model the first time it is needed, once."""

    def __init__(self, cfg: Config, timings: dict[str, float]):
        self.cfg, self.timings, self._lm = cfg, timings, None

    def get(self) -> LoadedModel:
        if self._lm is None:
            t = time.perf_counter()
            self._lm = load_model(self.cfg.raw.model.name_or_path, self.cfg.raw.compute.device)
            self.timings["load_s"] = time.perf_counter() - t
        return self._lm


def compute(cfg: Config, pairs: list[Pair], progress: bool = True, lm: LoadedModel | None = None) -> AtlasData:
    """Score every head on every pair (or read the scores from the cache),
    label the heads, and fetch the attention of the example pairs.

    Raises :class:`generator.errors.AtlasError` for model and tokenisation
    problems (bad model path, a sentence with no tokens).
    """
    timings: dict[str, float] = {}
    models = _ModelOnDemand(cfg, timings)
    if lm is not None:
        models._lm = lm
    folder = cfg.build_dir / "cache"
    raw = cfg.raw
    version = cache.code_version()
    scores_key = cache.make_key("scores", raw.model.name_or_path, model_identity(raw.model.name_or_path),
                                corpus_fingerprint(pairs), raw.model.max_length, version)
    hit = cache.load(folder, "scores", scores_key)
    encoded = None
    if hit is None:
        lm = models.get()
        encoded = encode_pairs(lm, pairs, raw.model.max_length, corpus_name=str(cfg.corpus_path))
        t = time.perf_counter()
        if raw.compute.engine == "ray":
            from generator.distributed import score_corpus_ray

            pair_scores, sums = score_corpus_ray(raw.model.name_or_path, encoded, raw.compute.batch_size,
                                                 workers=raw.compute.ray_workers, device=raw.compute.device,
                                                 progress=progress)
        else:
            pair_scores, sums = score_corpus(lm, encoded, raw.compute.batch_size, progress=progress)
        timings["forward_score_s"] = time.perf_counter() - t
        layouts = [e.layout for e in encoded]
        truncated = [e.truncated for e in encoded]
        model_info = {"name_or_path": raw.model.name_or_path, "layers": lm.layers, "heads": lm.heads,
                      "head_dim": lm.head_dim, "model_type": lm.model.config.model_type}
        packed, tokens = _pack_layouts(layouts)
        cache.store(folder, "scores", scores_key,
                    {"pair_scores": pair_scores, "total": sums.total, "count": sums.count,
                     "truncated": np.array(truncated, dtype=bool), **packed},
                    {"model": model_info, "tokens": tokens})
    else:
        arrays, meta = hit
        log.info("scores read from cache %s", scores_key)
        pair_scores = arrays["pair_scores"]
        sums = ScoreSums(arrays["total"], arrays["count"])
        layouts = _unpack_layouts(arrays, meta["tokens"])
        truncated = arrays["truncated"].tolist()
        model_info = meta["model"]

    thresholds = cfg.thresholds
    heads = summarise_heads(pair_scores, sums, thresholds, raw.examples_per_head)
    example_pairs = sorted({i for h in heads for i in h.examples})
    page_pairs = list(range(len(pairs))) if raw.pair_pages == "all" else example_pairs
    qk_pairs = sorted({h.examples[0] for h in heads if h.examples})
    show_key = cache.make_key("showcase", scores_key, page_pairs, qk_pairs)
    hit = cache.load(folder, "showcase", show_key)
    if hit is None:
        lm = models.get()
        if encoded is None:
            encoded = encode_pairs(lm, pairs, raw.model.max_length, corpus_name=str(cfg.corpus_path))
        t = time.perf_counter()
        showcase = compute_showcase(lm, encoded, page_pairs, qk_pairs, raw.compute.batch_size, progress=progress)
        timings["showcase_s"] = time.perf_counter() - t
        arrays = {f"att_{i}": a for i, a in showcase.attention.items()}
        for i, (q, k) in showcase.qk.items():
            arrays[f"q_{i}"], arrays[f"k_{i}"] = q, k
        cache.store(folder, "showcase", show_key, arrays, {"pairs": page_pairs, "qk": qk_pairs})
    else:
        arrays, _ = hit
        showcase = Showcase(
            attention={int(name[4:]): a for name, a in arrays.items() if name.startswith("att_")},
            qk={int(name[2:]): (a, arrays[f"k_{name[2:]}"]) for name, a in arrays.items() if name.startswith("q_")},
        )
    analysis = None
    acfg = raw.analysis
    if any((acfg.importance, acfg.group_masking, acfg.attribution, acfg.perturbed_masking, acfg.head_map)):
        labels = np.array([[h.label for h in heads[l * model_info["heads"]:(l + 1) * model_info["heads"]]]
                           for l in range(model_info["layers"])], dtype=object)
        # per-pair analyses (attribution) need the whole pair: truncated pairs are left out
        per_pair = analysis_pairs(heads, [i for i in page_pairs if not truncated[i]], acfg.max_pairs)
        analysis_key = cache.make_key("analysis", scores_key, acfg.model_dump(), labels.tolist(), per_pair,
                                      sorted(showcase.attention), raw.compute.batch_size, _analysis_version())
        hit = cache.load(folder, "analysis", analysis_key)
        if hit is None:
            lm = models.get()
            if encoded is None:
                encoded = encode_pairs(lm, pairs, raw.model.max_length, corpus_name=str(cfg.corpus_path))
            task_lm = lm
            if acfg.objective != "similarity":
                from generator.analysis.objective import load_task_model

                task_lm = load_task_model(raw.model.name_or_path, acfg.objective, raw.compute.device)
            analysis = run_analyses(acfg, lm, task_lm, pairs, encoded, labels, showcase.attention, per_pair,
                                    # capped at the model's positions, as the pairs were
                                    effective_max_length(lm, raw.model.max_length), raw.compute.batch_size)
            arrays, meta = analysis.to_cache()
            cache.store(folder, "analysis", analysis_key, arrays, meta)
            timings.update(analysis.timings)
        else:
            analysis = AnalysisResults.from_cache(*hit)
    compare = None
    if raw.compare is not None:  # a second checkpoint, head by head
        compare_key = cache.make_key("compare", scores_key, raw.compare.model_dump(),
                                     model_identity(raw.compare.name_or_path), sorted(showcase.attention),
                                     [p.label for p in pairs], thresholds, raw.examples_per_head,
                                     raw.compute.batch_size, compare_version(), _analysis_version())
        hit = cache.load(folder, "compare", compare_key)
        if hit is None:
            lm = models.get()
            if encoded is None:
                encoded = encode_pairs(lm, pairs, raw.model.max_length, corpus_name=str(cfg.corpus_path))
            t = time.perf_counter()
            compare = run_compare(raw.compare, lm, pairs, encoded, thresholds, raw.examples_per_head,
                                  raw.compute.batch_size, effective_max_length(lm, raw.model.max_length),
                                  sorted(showcase.attention), raw.compute.device, progress=progress)
            timings["compare_s"] = time.perf_counter() - t
            cache.store(folder, "compare", compare_key, *compare.to_cache())
        else:
            compare = CompareResults.from_cache(*hit)
    return AtlasData(model=model_info, pairs=pairs, layouts=layouts, truncated=truncated, pair_scores=pair_scores,
                     sums=sums, heads=heads, showcase=showcase, thresholds=thresholds, timings=timings,
                     analysis=analysis, compare=compare)
