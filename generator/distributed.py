"""Optional Ray backend (``compute.engine: ray``; ``pip install .[ray]``).

The encoded corpus is cut into the same length-sorted padded batches as the
local engine (:func:`generator.model.length_sorted_batches`). A Ray Data
dataset holds one row per batch: its pairs, pickled (token ids, token types
and the token layout the scores need: about 1.1 KB a pair on the shipped
corpus). ``map_batches`` sends rows to a pool of ``workers`` actors, each of
which loads the model once (a callable class) and returns the per-pair scores
and attention budgets of its rows (:func:`generator.scoring.score_batch_all`,
the local engine's own function): per pair ``layers x heads x (7 + 2 x 11)``
float32 plus its index, 8,360 bytes for the default 6 x 12 model. The driver
puts every pair's results in place and merges the batches' exact
:class:`~generator.patterns.ScoreSums` with ``+`` in batch order, the same
additions as :func:`generator.scoring.score_corpus` does, so both engines give
the same numbers: bit for bit when the workers and the local run use the same
number of torch threads (Ray gives each one-CPU worker one thread), else equal
to float32 rounding (a matrix product's sums are split differently across
threads; about 1e-7 here).

Scheduling, retries and placement are Ray's: nothing here schedules work.
Every worker must be able to import torch, transformers and the model (the
model's files are read on the worker, never sent): on a cluster, install the
project's dependencies (``pip install .[ray]``) on every node and give every
node the same ``model.name_or_path``; :func:`init_ray` ships the
``generator`` package itself with the job (``py_modules``).
"""

from __future__ import annotations

import logging
import pickle
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

    def __init__(self, name_or_path: str, device: str, dtype: str = "float32"):
        from generator.model import load_model
        from generator.scoring import output_grams

        self.lm = load_model(name_or_path, device, dtype=dtype)
        self.grams = output_grams(self.lm)

    def __call__(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from generator.scoring import score_batch_all

        indices, scores, budget, value_budget = [], [], [], []
        for blob in rows["pairs"]:
            batch: list[EncodedPair] = pickle.loads(blob)
            indices.append(np.array([e.index for e in batch], dtype=np.int64))
            result = score_batch_all(self.lm, batch, budget=True, grams=self.grams)
            scores.append(result.scores)
            budget.append(result.budget)
            value_budget.append(result.value_budget)
        return {"index": np.concatenate(indices), "scores": np.concatenate(scores).astype(np.float32),
                "budget": np.concatenate(budget).astype(np.float32),
                "value_budget": np.concatenate(value_budget).astype(np.float32)}


def init_ray(address: str | None = None, num_cpus: int | None = None, **kwargs) -> None:
    """Start or join a Ray cluster, shipping the ``generator`` package to its
    workers (``runtime_env.py_modules``; Ray accepts local folders only at
    this job level). :func:`score_corpus_ray` calls it when Ray is not
    initialised; call it yourself to choose the cluster and its options.

    Args:
        address: ``compute.ray_address``, passed to ``ray.init(address=...)``:
            ``"auto"``, ``"ray://host:10001"`` (Ray Client) or
            ``"host:6379"``; ``None``: the ``RAY_ADDRESS`` environment
            variable, else a cluster started on this machine with
            ``ray start``, else a new local instance (Ray's rules).
        num_cpus: CPUs of a new local instance (``None``: all); must be
            ``None`` when joining a cluster (Ray's rule).
        **kwargs: more ``ray.init`` arguments.

    Raises:
        AtlasError: Ray is not installed, or the cluster at ``address``
            cannot be joined (the message names ``compute.ray_address``).
    """
    ray = _ray()
    import generator

    runtime_env = dict(kwargs.pop("runtime_env", None) or {})
    runtime_env["py_modules"] = [*runtime_env.get("py_modules", []), str(Path(generator.__file__).parent)]
    try:
        ray.init(address=address, num_cpus=num_cpus, runtime_env=runtime_env, include_dashboard=False,
                 log_to_driver=False, configure_logging=False, **kwargs)
    except (ConnectionError, TimeoutError) as exc:
        raise AtlasError(f"compute.ray_address: cannot join the Ray cluster at {address!r}: {exc}") from None


def score_corpus_ray(name_or_path: str, encoded: list[EncodedPair], batch_size: int, workers: int = 2,
                     device: str = "auto", progress: bool = True,
                     address: str | None = None, dtype: str = "float32") -> tuple[np.ndarray, ScoreSums, CorpusBudget]:
    """:func:`generator.scoring.score_corpus` on a Ray cluster.

    Args:
        name_or_path: ``model.name_or_path``; each worker loads the model
            itself, so the path must exist on every node.
        encoded: the corpus, from :func:`generator.model.encode_pairs`.
        batch_size: ``compute.batch_size``, pairs per forward pass.
        workers: ``compute.ray_workers``, actors that score batches (one
            model each, one CPU each, one GPU each on a GPU cluster).
        device: ``compute.device`` of the workers.
        dtype: ``compute.dtype``, the precision every worker runs the model in.
        progress: show Ray Data's progress bars.
        address: ``compute.ray_address``, used when Ray is not initialised
            yet (see :func:`init_ray`); a running Ray is used as it is.

    Returns:
        ``(pair_scores, sums, budget)`` as :func:`generator.scoring.score_corpus`
        gives them, equal to the local engine's: float32 ``[pairs, layers,
        heads, 7]`` in corpus order, the :class:`ScoreSums` and the
        :class:`CorpusBudget` (raw and value-weighted).

    Raises:
        AtlasError: Ray is missing, the corpus is empty, the cluster cannot
            be joined, or pairs came back without scores.
    """
    ray = _ray()
    if not encoded:
        raise AtlasError("the corpus has no pairs")
    batches = length_sorted_batches(encoded, batch_size)
    if not ray.is_initialized():
        init_ray(address)
    elif address is not None:
        log.info("ray: already initialised; compute.ray_address %r is not used", address)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = progress
    use_gpu = device == "cuda" or (device == "auto" and _cluster_has_gpus(ray))
    # one row per batch, carrying its own pairs: a node receives only the
    # batches it scores (pickled bytes: an Arrow binary column)
    ds = ray.data.from_items([{"batch": k, "pairs": pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL)}
                              for k, batch in enumerate(batches)])
    scored = ds.map_batches(
        _BatchScorer,
        fn_constructor_kwargs={"name_or_path": name_or_path, "device": device, "dtype": dtype},
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
