"""The computing half of a build: named stages over one cache helper.

The data flow of :func:`compute`, one stage per function below::

    pairs ──encode──> EncodedPair per pair            (on a cache miss only; loads the model)
          ──score───> Scores    [pairs, layers, heads, 7] and the corpus sums
          ──label───> HeadSummary per head             (not cached: thresholds only)
          ──showcase> Showcase  attention of the pairs the pages show, q/k of each head's best pair
          ──analyses> AnalysisResults                  (the config's ``analysis:`` section)

Each cached stage is ``cache.cached(folder, kind, key, compute, pack, unpack)``:
its key names everything its output depends on (the score key carries the
model identity, the corpus, ``model.max_length`` and the code version; the
later keys carry the score key), so a template or threshold change reuses
every entry and a cache hit never loads the model. The pages (render, mkdocs,
publish) are :func:`generator.site.build_site`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from generator import cache
from generator.analysis.run import AnalysisResults, analysis_pairs, run_analyses
from generator.config import Config, Pair, corpus_fingerprint, setting_error
from generator.model import EncodedPair, LoadedModel, effective_max_length, encode_pairs, load_model, model_identity
from generator.compare import CompareResults, run_compare
from generator.patterns import PairLayout, ScoreSums
from generator.budget import BudgetSums
from generator.value_norms import attention_sinks
from generator.scoring import CorpusBudget, HeadSummary, Showcase, compute_showcase, score_corpus, summarise_heads

log = logging.getLogger(__name__)


@dataclass
class AtlasData:
    """Everything the pages show.

    Attributes:
        model: ``{"name_or_path", "layers", "heads", "head_dim", "model_type"}``.
        pairs: the corpus, in file order.
        layouts: each pair's tokens and masks (``[n]`` arrays), corpus order.
        truncated: whether ``model.max_length`` cut each pair.
        pair_scores: float32 ``[pairs, layers, heads, 7]``, each head's seven
            pattern scores on each pair (NaN = undefined on that pair).
        sums: the corpus sums of the scores (their means label the heads).
        heads: one :class:`HeadSummary` per head, layer-major
            (``layer * heads + head``).
        showcase: attention and q/k of the pairs the pages show.
        thresholds: pattern -> threshold in [0, 1].
        timings: stage -> seconds (only the stages that ran, not those read
            from the cache).
        analysis: the ``analysis:`` section's results, or ``None`` when every
            analysis is off.
    """

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
    budget_sums: CorpusBudget | None = None

    @property
    def budget(self) -> np.ndarray:
        """``[layers, heads, 11]`` attention budget (:data:`generator.budget.CATEGORIES`
        order): per head, the mean over pairs of the share of its attention
        that goes to each category; sums to 1 per head."""
        return self.budget_sums.sums.mean()

    @property
    def budget_lead(self) -> np.ndarray:
        """``[layers, heads, 11]`` per head, the fraction of pairs on which each
        category has the largest share (sums to 1 per head)."""
        return self.budget_sums.sums.lead_share()

    @property
    def value_budget(self) -> np.ndarray:
        """``[layers, heads, 11]`` the budget of the value-weighted attention
        (Kobayashi et al. 2020, "Attention is Not Only a Weight"): attention
        ``alpha_ij`` times ``||f_h(x_j)||``, rows renormalised."""
        return self.budget_sums.value_sums.mean()

    @property
    def attention_sinks(self) -> list[tuple[int, int]]:
        """``(layer, head)`` of the "attention sink" heads, layer-major: a large
        raw share on [CLS]/[SEP] that mostly vanishes once value-weighted
        (rule and thresholds: :func:`generator.value_norms.attention_sinks`)."""
        return attention_sinks(self.budget, self.value_budget)

    @property
    def value_budget_lead(self) -> np.ndarray:
        """``[layers, heads, 11]`` as :attr:`budget_lead`, for the value-weighted attention."""
        return self.budget_sums.value_sums.lead_share()
    #: the comparison with ``compare.name_or_path`` when ``compare:`` is configured, else ``None``.
    compare: CompareResults | None = None

    @property
    def layers(self) -> int:
        return int(self.model["layers"])

    @property
    def n_heads(self) -> int:
        return int(self.model["heads"])

    def head(self, layer: int, head: int) -> HeadSummary:
        """One head's summary.

        Args:
            layer: 0-indexed.
            head: 0-indexed within the layer.

        Returns:
            Its :class:`HeadSummary` (``heads[layer * n_heads + head]``).
        """
        return self.heads[layer * self.n_heads + head]


@dataclass
class Scores:
    """The score stage's output (see :func:`score_stage`).

    Attributes:
        model: the model's name and shape (as :attr:`AtlasData.model`).
        layouts: each pair's tokens and masks, corpus order.
        truncated: whether ``model.max_length`` cut each pair.
        pair_scores: float32 ``[pairs, layers, heads, 7]``.
        sums: the corpus sums (:class:`ScoreSums`, ``[layers, heads, 7]``).
        budget: the corpus's attention budgets, raw and value-weighted
            (:class:`generator.scoring.CorpusBudget`, ``[layers, heads, 11]``).
    """

    model: dict
    layouts: list[PairLayout]
    truncated: list[bool]
    pair_scores: np.ndarray
    sums: ScoreSums
    budget: CorpusBudget

    def to_cache(self) -> tuple[dict[str, np.ndarray], dict]:
        """``(arrays, meta)`` for :func:`generator.cache.store`; the layouts'
        arrays are concatenated over the pairs, ``lengths`` cuts them apart."""
        arrays = {
            "pair_scores": self.pair_scores, "total": self.sums.total, "count": self.sums.count,
            "truncated": np.array(self.truncated, dtype=bool),
            "lengths": np.array([lay.n for lay in self.layouts], dtype=np.int32),
            "segment": np.concatenate([lay.segment for lay in self.layouts]).astype(np.int8),
            "word": np.concatenate([lay.word for lay in self.layouts]).astype(np.int32),
            "special": np.concatenate([lay.special for lay in self.layouts]).astype(bool),
        }
        for prefix, b in (("budget", self.budget.sums), ("value_budget", self.budget.value_sums)):
            arrays[f"{prefix}_total"], arrays[f"{prefix}_lead"] = b.total, b.lead
            arrays[f"{prefix}_pairs"] = np.array(b.pairs, dtype=np.int64)
        tokens = [[list(lay.tokens), list(lay.identities())] for lay in self.layouts]
        return arrays, {"model": self.model, "tokens": tokens}

    @classmethod
    def from_cache(cls, arrays: dict[str, np.ndarray], meta: dict) -> Scores:
        """The inverse of :meth:`to_cache`."""
        layouts, start = [], 0
        for n, (tokens, identity) in zip(arrays["lengths"].tolist(), meta["tokens"]):
            cut = slice(start, start + n)
            layouts.append(PairLayout(tuple(tokens), arrays["segment"][cut].copy(), arrays["word"][cut].copy(),
                                      arrays["special"][cut].copy(), identity=tuple(identity)))
            start += n

        def budget_sums(prefix: str) -> BudgetSums:
            return BudgetSums(arrays[f"{prefix}_total"], arrays[f"{prefix}_lead"], int(arrays[f"{prefix}_pairs"]))

        return cls(model=meta["model"], layouts=layouts, truncated=arrays["truncated"].tolist(),
                   pair_scores=arrays["pair_scores"], sums=ScoreSums(arrays["total"], arrays["count"]),
                   budget=CorpusBudget(budget_sums("budget"), budget_sums("value_budget")))


class BuildRun:
    """What the stages of one build share: the config, the corpus, the model
    (loaded on first need, once), the encoded pairs (encoded on first need,
    once) and the timings (seconds, by stage).

    Args:
        cfg: the validated config.
        pairs: the corpus.
        progress: show progress bars.
        lm: an already loaded model to use instead of loading one.
    """

    def __init__(self, cfg: Config, pairs: list[Pair], progress: bool = True, lm: LoadedModel | None = None):
        self.cfg, self.pairs, self.progress = cfg, pairs, progress
        self.folder = cfg.build_dir / "cache"
        self.timings: dict[str, float] = {}
        self._lm = lm
        self._encoded: list[EncodedPair] | None = None

    def model(self) -> LoadedModel:
        """The model of ``model.name_or_path`` on ``compute.device``.

        Raises:
            AtlasError: see :func:`generator.model.load_model`.
        """
        if self._lm is None:
            t = time.perf_counter()
            self._lm = load_model(self.cfg.raw.model.name_or_path, self.cfg.raw.compute.device,
                                  dtype=self.cfg.raw.compute.dtype)
            self.timings["load_s"] = time.perf_counter() - t
        return self._lm

    def encoded(self) -> list[EncodedPair]:
        """The encode stage: every pair tokenised (see
        :func:`generator.model.encode_pairs`), once.

        Raises:
            AtlasError: a sentence with no token (naming the corpus file, the
                pair and the field).
        """
        if self._encoded is None:
            self._encoded = encode_pairs(self.model(), self.pairs, self.cfg.raw.model.max_length,
                                         corpus_name=str(self.cfg.corpus_path))
        return self._encoded

    def timed(self, name: str, fn, *args, **kwargs):
        """Run one timed step.

        Args:
            name: the key of :attr:`timings` (``<step>_s``).
            fn: the step, called as ``fn(*args, **kwargs)``.

        Returns:
            What ``fn`` returns; its wall-clock seconds are recorded as
            ``timings[name]``.
        """
        t = time.perf_counter()
        out = fn(*args, **kwargs)
        self.timings[name] = time.perf_counter() - t
        return out


def score_stage(run: BuildRun) -> tuple[str, Scores]:
    """Score every head on every pair: the batch run.

    Key: model name and :func:`~generator.model.model_identity`, the corpus
    (:func:`~generator.config.corpus_fingerprint`), ``model.max_length``,
    ``compute.dtype`` and
    :func:`~generator.cache.code_version`. Inputs on a miss: the encoded pairs;
    ``compute.engine`` picks the local loop
    (:func:`generator.scoring.score_corpus`) or Ray
    (:func:`generator.distributed.score_corpus_ray`), which give the same
    numbers.

    Args:
        run: the build (its config, corpus, model and encoded pairs).

    Returns:
        ``(key, scores)``: the key (the later stages' keys include it) and
        the :class:`Scores`.
    """
    raw = run.cfg.raw
    name = raw.model.name_or_path
    key = cache.make_key("scores", name, model_identity(name), corpus_fingerprint(run.pairs), raw.model.max_length,
                         raw.compute.dtype, cache.code_version())

    def compute() -> Scores:
        lm, encoded = run.model(), run.encoded()
        if raw.compute.engine == "ray":
            from generator.distributed import score_corpus_ray

            pair_scores, sums, budget = run.timed("forward_score_s", score_corpus_ray, name, encoded, raw.compute.batch_size,
                                          workers=raw.compute.ray_workers, device=raw.compute.device,
                                          progress=run.progress, address=raw.compute.ray_address,
                                          dtype=raw.compute.dtype)
        else:
            pair_scores, sums, budget = run.timed("forward_score_s", score_corpus, lm, encoded, raw.compute.batch_size,
                                          progress=run.progress)
        model_info = {"name_or_path": name, "layers": lm.layers, "heads": lm.heads, "head_dim": lm.head_dim,
                      "model_type": lm.model.config.model_type}
        return Scores(model=model_info, layouts=[e.layout for e in encoded], truncated=[e.truncated for e in encoded],
                      pair_scores=pair_scores, sums=sums, budget=budget)

    return key, cache.cached(run.folder, "scores", key, compute, lambda s: s.to_cache(), Scores.from_cache)


def showcase_stage(run: BuildRun, scores_key: str, page_pairs: list[int], qk_pairs: list[int]) -> Showcase:
    """Fetch the attention of the pairs that get pages and the query/key
    vectors of each head's best example (a second, small forward pass).

    Key: the score key, ``page_pairs`` and ``qk_pairs``.

    Args:
        run: the build.
        scores_key: from :func:`score_stage`.
        page_pairs: corpus indices whose attention the pages show.
        qk_pairs: corpus indices whose queries and keys the head pages show.

    Returns:
        The :class:`Showcase`.
    """
    key = cache.make_key("showcase", scores_key, page_pairs, qk_pairs)

    def compute() -> Showcase:
        return run.timed("showcase_s", compute_showcase, run.model(), run.encoded(), page_pairs, qk_pairs,
                         run.cfg.raw.compute.batch_size, progress=run.progress)

    return cache.cached(run.folder, "showcase", key, compute, lambda s: s.to_cache(), Showcase.from_cache)


def analysis_stage(run: BuildRun, scores_key: str, scores: Scores, heads: list[HeadSummary],
                   page_pairs: list[int]) -> AnalysisResults | None:
    """Run the enabled analyses of the ``analysis:`` section (head importance,
    Michel et al. 2019, "Are Sixteen Heads Really Better than One?"; integrated
    gradients, Sundararajan et al. 2017, "Axiomatic Attribution for Deep
    Networks"; perturbed masking, Wu et al. 2020, "Perturbed Masking:
    Parameter-free Probing for Analyzing and Interpreting BERT"; the head map,
    Clark et al. 2019, "What Does BERT Look At? An Analysis of BERT's
    Attention", section 6).

    Key: the score key, the ``analysis:`` section, the head labels, the pairs
    analysed one by one, ``compute.batch_size`` and
    the pairs' ``label`` values (the objectives' targets).

    Args:
        run: the build.
        scores_key: from :func:`score_stage`.
        scores: its output (the model's shape; which pairs are truncated).
        heads: the labelled heads (for group masking and the analysed pairs).
        page_pairs: corpus indices of the pairs that get pages.

    Returns:
        The :class:`AnalysisResults`, or ``None`` when every analysis is off.

    Raises:
        AtlasError: naming the config file and ``analysis.perturbed_layer``
            when that layer is not one of the model's; and what loading a
            task model raises (see :func:`generator.model.load_model`).
    """
    raw = run.cfg.raw
    acfg = raw.analysis
    if not any((acfg.importance, acfg.group_masking, acfg.attribution, acfg.perturbed_masking, acfg.head_map)):
        return None
    n_layers, n_heads = int(scores.model["layers"]), int(scores.model["heads"])
    if acfg.perturbed_masking and not -n_layers <= acfg.perturbed_layer < n_layers:
        raise setting_error(run.cfg, ("analysis", "perturbed_layer"),
                            f"{acfg.perturbed_layer} is not a layer of {raw.model.name_or_path!r}, which has "
                            f"{n_layers} layers: use 0..{n_layers - 1} (0 = first) or -1..-{n_layers} "
                            "(-1 = last)")
    labels = np.array([[h.label for h in heads[l * n_heads:(l + 1) * n_heads]] for l in range(n_layers)],
                      dtype=object)
    # per-pair analyses (attribution) need the whole pair: truncated pairs are left out
    per_pair = analysis_pairs(heads, [i for i in page_pairs if not scores.truncated[i]], acfg.max_pairs)
    # the score key leaves the pairs' labels out (the model does not see them); the objectives use them
    key = cache.make_key("analysis", scores_key, acfg.model_dump(), labels.tolist(), per_pair,
                         raw.compute.batch_size, [p.label for p in run.pairs])

    def compute() -> AnalysisResults:
        lm = run.model()
        task_lm = lm if acfg.objective == "similarity" else load_model(raw.model.name_or_path, raw.compute.device,
                                                                       task=acfg.objective, dtype=raw.compute.dtype)
        results = run_analyses(acfg, lm, task_lm, run.pairs, run.encoded(), labels, per_pair,
                               raw.compute.batch_size)
        run.timings.update(results.timings)
        return results

    return cache.cached(run.folder, "analysis", key, compute, lambda r: r.to_cache(),
                        AnalysisResults.from_cache)


def compare_stage(run: BuildRun, scores_key: str, page_pairs: list[int]) -> CompareResults | None:
    """Compare ``compare.name_or_path`` with the model head by head (scores,
    labels, attention budget, Jensen-Shannon divergence of every attention
    row; :func:`generator.compare.run_compare`), when ``compare:`` is set.

    Key: the score key, the ``compare:`` section, the second checkpoint's
    identity (:func:`generator.model.model_identity`), the pairs with pages,
    the pairs' labels, the thresholds, ``examples_per_head`` and
    ``compute.batch_size``.

    Args:
        run: the build.
        scores_key: from :func:`score_stage`.
        page_pairs: corpus indices whose attention of the second model the
            pair pages show.

    Returns:
        The :class:`generator.compare.CompareResults`, or ``None`` without a
        ``compare:`` section.

    Raises:
        AtlasError: the second checkpoint cannot be loaded or does not match
            the first (layers, heads, vocabulary).
    """
    raw = run.cfg.raw
    if raw.compare is None:
        return None
    key = cache.make_key("compare", scores_key, raw.compare.model_dump(), model_identity(raw.compare.name_or_path),
                         page_pairs, [p.label for p in run.pairs], run.cfg.thresholds, raw.examples_per_head,
                         raw.compute.batch_size)

    def compute() -> CompareResults:
        lm = run.model()
        return run.timed("compare_s", run_compare, raw.compare, lm, run.pairs, run.encoded(), run.cfg.thresholds,
                         raw.examples_per_head, raw.compute.batch_size,
                         effective_max_length(lm, raw.model.max_length), page_pairs, raw.compute.device,
                         progress=run.progress, dtype=raw.compute.dtype)

    return cache.cached(run.folder, "compare", key, compute, lambda c: c.to_cache(), CompareResults.from_cache)


def compute(cfg: Config, pairs: list[Pair], progress: bool = True, lm: LoadedModel | None = None) -> AtlasData:
    """The computing half of a build: encode -> score -> label -> showcase ->
    analyses, each stage read from the cache when its key is there.

    Args:
        cfg: the validated config.
        pairs: the corpus (from :func:`generator.config.load_corpus`).
        progress: show progress bars.
        lm: an already loaded model (default: loaded from ``model.name_or_path``
            when a stage misses the cache, not at all otherwise).

    Returns:
        The :class:`AtlasData` the pages show.

    Raises:
        AtlasError: for model and tokenisation problems (a bad model path, a
            sentence with no token) and settings that do not fit the model
            (``analysis.perturbed_layer``).
    """
    run = BuildRun(cfg, pairs, progress, lm)
    raw = cfg.raw
    scores_key, scores = score_stage(run)
    heads = summarise_heads(scores.pair_scores, scores.sums, cfg.thresholds, raw.examples_per_head,
                            budget=scores.budget)
    example_pairs = sorted({i for h in heads for i in h.examples})
    page_pairs = list(range(len(pairs))) if raw.pair_pages == "all" else example_pairs
    qk_pairs = sorted({h.examples[0] for h in heads if h.examples})
    showcase = showcase_stage(run, scores_key, page_pairs, qk_pairs)
    analysis = analysis_stage(run, scores_key, scores, heads, page_pairs)
    compare = compare_stage(run, scores_key, page_pairs)
    return AtlasData(model=scores.model, pairs=pairs, layouts=scores.layouts, truncated=scores.truncated,
                     pair_scores=scores.pair_scores, sums=scores.sums, heads=heads, showcase=showcase,
                     thresholds=cfg.thresholds, timings=run.timings, analysis=analysis,
                     budget_sums=scores.budget, compare=compare)
