"""Optional Ray backend (``compute.engine: ray``; ``pip install .[ray]``).

The encoded corpus is cut into the same length-sorted padded batches as the
local engine (:func:`generator.model.length_sorted_batches`). A Ray Data
dataset holds, per row, the pair indices of one such batch; ``map_batches``
sends rows to a pool of ``workers`` actors, each of which loads the model once
(a callable class) and returns the per-pair scores of its rows
(:func:`generator.scoring.score_batch`, the local engine's own function). The
driver puts every pair's scores in place and merges the batches' exact
:class:`~generator.patterns.ScoreSums` with ``+`` in batch order, the same
additions as :func:`generator.scoring.score_corpus` does, so both engines give
the same numbers: bit for bit when the workers and the local run use the same
number of torch threads (Ray gives each one-CPU worker one thread), else equal
to float32 rounding (a matrix product's sums are split differently across
threads; about 1e-7 here).

Scheduling, retries and placement are Ray's: nothing here schedules work.
Every worker must be able to import torch, transformers and the model: on a
cluster, install the project's dependencies (``pip install .[ray]``) on every
node; :func:`init_ray` ships the ``generator`` package itself with the job
(``py_modules``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from generator.config import PATTERNS
from generator.errors import AtlasError
from generator.model import EncodedPair, length_sorted_batches
from generator.patterns import ScoreSums
from generator.scoring import BatchResult, CorpusBudget

log = logging.getLogger(__name__)


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise AtlasError("compute.engine is 'ray' but Ray is not installed: pip install '.[ray]' "
                         "(or set compute.engine: local)") from None
    return ray


class _BatchScorer:
    """A Ray Data callable class: one per actor, the model loaded once."""

    def __init__(self, name_or_path: str, device: str, encoded):
        import ray

        from generator.model import load_model

        if isinstance(encoded, ray.ObjectRef):
            encoded = ray.get(encoded)
        self.encoded: list[EncodedPair] = encoded
        self.lm = load_model(name_or_path, device)

    def __call__(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from generator.scoring import output_grams, score_batch_all

        if not hasattr(self, "grams"):
            self.grams = output_grams(self.lm)
        indices, scores, budget, value_budget = [], [], [], []
        for row in rows["indices"]:
            chosen = row[row >= 0]
            indices.append(chosen.astype(np.int64))
            result = score_batch_all(self.lm, [self.encoded[i] for i in chosen], budget=True, grams=self.grams)
            scores.append(result.scores)
            budget.append(result.budget)
            value_budget.append(result.value_budget)
        return {"index": np.concatenate(indices), "scores": np.concatenate(scores).astype(np.float32),
                "budget": np.concatenate(budget).astype(np.float32),
                "value_budget": np.concatenate(value_budget).astype(np.float32)}


def init_ray(address: str | None = None, num_cpus: int | None = None, **kwargs) -> None:
    """Connect to the Ray cluster at ``address`` (``None``: ``RAY_ADDRESS`` or
    a new local instance with ``num_cpus`` CPUs), shipping the ``generator``
    package to the workers (``runtime_env.py_modules``; Ray accepts local
    folders only at this job level). :func:`score_corpus_ray` calls it when
    Ray is not initialised; call it yourself to choose the cluster."""
    ray = _ray()
    import generator

    runtime_env = dict(kwargs.pop("runtime_env", None) or {})
    runtime_env.setdefault("py_modules", []).append(str(Path(generator.__file__).parent))
    ray.init(address=address, num_cpus=num_cpus, runtime_env=runtime_env, include_dashboard=False,
             log_to_driver=False, configure_logging=False, **kwargs)


def score_corpus_ray(name_or_path: str, encoded: list[EncodedPair], batch_size: int, workers: int = 2,
                     device: str = "auto", progress: bool = True) -> tuple[np.ndarray, ScoreSums, CorpusBudget]:
    """:func:`generator.scoring.score_corpus` on a Ray cluster.

    ``name_or_path`` and ``device`` are the config's ``model.name_or_path`` and
    ``compute.device`` (each worker loads the model itself); ``workers`` is
    ``compute.ray_workers``. Uses the running Ray instance, or starts a local
    one. Returns ``(pair_scores [pairs, layers, heads, 7] float32, ScoreSums,
    CorpusBudget)`` in corpus order, equal to the local engine's.
    """
    ray = _ray()
    if not encoded:
        raise AtlasError("the corpus has no pairs")
    batches = length_sorted_batches(encoded, batch_size)
    rows = []
    for k, batch in enumerate(batches):
        idx = np.full(batch_size, -1, dtype=np.int64)
        idx[:len(batch)] = [e.index for e in batch]
        rows.append({"batch": k, "indices": idx})
    if not ray.is_initialized():
        init_ray()
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = progress
    use_gpu = device == "cuda" or (device == "auto" and _cluster_has_gpus(ray))
    encoded_ref = ray.put(encoded)
    ds = ray.data.from_items(rows)
    scored = ds.map_batches(
        _BatchScorer,
        fn_constructor_kwargs={"name_or_path": name_or_path, "device": device, "encoded": encoded_ref},
        batch_size=1,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=1,
        num_gpus=1 if use_gpu else 0,
    )
    pair_scores = pair_budget = pair_value_budget = None
    seen = np.zeros(len(encoded), dtype=bool)
    for out in scored.iter_batches(batch_format="numpy", batch_size=None):
        if pair_scores is None:
            pair_scores = np.full((len(encoded), *out["scores"].shape[1:]), np.nan, dtype=np.float32)
            pair_budget = np.full((len(encoded), *out["budget"].shape[1:]), np.nan, dtype=np.float32)
            pair_value_budget = np.full_like(pair_budget, np.nan)
        pair_scores[out["index"]] = out["scores"]
        pair_budget[out["index"]] = out["budget"]
        pair_value_budget[out["index"]] = out["value_budget"]
        seen[out["index"]] = True
    if pair_scores is None or not seen.all():
        raise AtlasError(f"ray: {int((~seen).sum())} of {len(encoded)} pairs came back without scores")
    assert pair_scores.shape[-1] == len(PATTERNS)
    layers, heads = pair_scores.shape[1:3]
    sums = ScoreSums.zeros(layers, heads)
    budget = CorpusBudget.zeros(layers, heads)
    for batch in batches:  # one exact shard sum per batch, merged in the local engine's order
        shard = ScoreSums.zeros(layers, heads)
        rows_of = [e.index for e in batch]
        shard.add(pair_scores[rows_of].astype(np.float64))
        sums = sums + shard
        budget.add(BatchResult(pair_scores[rows_of], pair_budget[rows_of], pair_value_budget[rows_of]))
    return pair_scores, sums, budget


def _cluster_has_gpus(ray) -> bool:
    try:
        return ray.cluster_resources().get("GPU", 0) > 0
    except Exception:  # noqa: BLE001 - no cluster information: assume CPU
        return False
