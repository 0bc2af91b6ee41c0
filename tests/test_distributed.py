"""The Ray engine against the local engine: a local Ray instance with two
workers scores the same pairs and must give identical per-pair scores and
corpus sums (the packaged model, a small real corpus)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import small_corpus_items

ray = pytest.importorskip("ray", reason="ray is not installed (pip install '.[ray]'): the Ray engine is optional")
pytest.importorskip("ray.data", reason="ray[data] is not installed (pip install '.[ray]')")


@pytest.fixture(scope="module")
def local_ray():
    """A private local Ray instance with two CPUs (so two one-CPU workers fit)."""
    from generator.distributed import init_ray

    if ray.is_initialized():
        ray.shutdown()
    init_ray(num_cpus=2)  # ships the generator package to the workers (py_modules)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_ray_engine_matches_local_engine(local_ray):
    from generator.config import DEFAULT_MODEL, Pair
    from generator.distributed import score_corpus_ray
    from generator.model import encode_pairs, load_model
    from generator.scoring import score_corpus

    pairs = [Pair.model_validate(item) for item in small_corpus_items(12)]
    lm = load_model(DEFAULT_MODEL, "cpu")
    encoded = encode_pairs(lm, pairs, 64)
    batch_size = 4  # several batches, so that both workers get work and shards must merge
    ray_scores, ray_sums, ray_budget = score_corpus_ray(DEFAULT_MODEL, encoded, batch_size, workers=2, device="cpu",
                                            progress=False)
    # Ray runs each one-CPU worker with one torch thread; with the same thread
    # count the local engine must give the very same bits.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        local_scores, local_sums, local_budget = score_corpus(lm, encoded, batch_size, progress=False)
    finally:
        torch.set_num_threads(threads)
    default_threads_scores, _, _ = score_corpus(lm, encoded, batch_size, progress=False)

    assert ray_scores.shape == local_scores.shape == (len(pairs), lm.layers, lm.heads, 7)
    assert ray_scores.dtype == np.float32
    np.testing.assert_array_equal(ray_scores, local_scores)  # NaN where undefined, in the same places
    np.testing.assert_array_equal(ray_sums.count, local_sums.count)
    np.testing.assert_array_equal(ray_sums.total, local_sums.total)
    np.testing.assert_array_equal(ray_sums.mean(), local_sums.mean())
    for ray_b, local_b in ((ray_budget.sums, local_budget.sums), (ray_budget.value_sums, local_budget.value_sums)):
        np.testing.assert_array_equal(ray_b.total, local_b.total)
        np.testing.assert_array_equal(ray_b.lead, local_b.lead)
        assert ray_b.pairs == local_b.pairs == len(pairs)
    # With other thread counts the float32 sums inside matrix products split
    # differently: equal to rounding.
    np.testing.assert_allclose(ray_scores, default_threads_scores, atol=1e-6, rtol=0, equal_nan=True)


def test_ray_engine_names_missing_install(monkeypatch):
    """Without Ray the engine fails with an instruction, not an ImportError."""
    import builtins

    from generator import distributed
    from generator.errors import AtlasError

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(AtlasError, match=r"pip install '\.\[ray\]'"):
        distributed.score_corpus_ray("x", [], 4)
