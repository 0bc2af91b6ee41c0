"""The Ray engine against the local engine, on a private local Ray instance
(two one-CPU workers): it must give the very same per-pair scores, corpus sums
and attention budgets (raw and value-weighted), and a whole build with
``compute.engine: ray`` run by a second driver that joins that instance
through ``compute.ray_address`` must publish the local engine's numbers.
The packaged model and a small real corpus; no timing is asserted, and every
wait has a generous limit (a loaded machine only makes it slower)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import small_corpus_items, write_project

ray = pytest.importorskip("ray", reason="ray is not installed (pip install '.[ray]'): the Ray engine is optional")
pytest.importorskip("ray.data", reason="ray[data] is not installed (pip install '.[ray]')")

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def local_ray():
    """A private local Ray instance, shut down after the module. Four logical
    CPUs: two one-CPU workers per job, so that the second driver's pool never
    waits for the first's (Ray does not pin CPUs: the machine's own cores are
    shared by all of them). Yields the instance's GCS address (``host:port``)."""
    from generator.distributed import init_ray

    if ray.is_initialized():
        ray.shutdown()
    # "local": a new instance even beside one started with `ray start`;
    # init_ray ships the generator package to the workers (py_modules)
    init_ray(address="local", num_cpus=4)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def _local_one_thread(lm, encoded, batch_size):
    """The local engine with one torch thread, as each one-CPU Ray worker runs."""
    from generator.scoring import score_corpus

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return score_corpus(lm, encoded, batch_size, progress=False)
    finally:
        torch.set_num_threads(threads)


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
    local_scores, local_sums, local_budget = _local_one_thread(lm, encoded, batch_size)
    default_threads_scores, _, _ = score_corpus(lm, encoded, batch_size, progress=False)

    assert ray_scores.shape == local_scores.shape == (len(pairs), lm.layers, lm.heads, 7)
    assert ray_scores.dtype == np.float32
    np.testing.assert_array_equal(ray_scores, local_scores)  # NaN where undefined, in the same places
    np.testing.assert_array_equal(ray_sums.count, local_sums.count)
    np.testing.assert_array_equal(ray_sums.total, local_sums.total)
    np.testing.assert_array_equal(ray_sums.mean(), local_sums.mean())
    for ray_b, local_b in ((ray_budget.sums, local_budget.sums), (ray_budget.value_sums, local_budget.value_sums)):
        assert ray_b.total.shape == (lm.layers, lm.heads, 11)
        np.testing.assert_array_equal(ray_b.total, local_b.total)
        np.testing.assert_array_equal(ray_b.lead, local_b.lead)
        np.testing.assert_array_equal(ray_b.mean(), local_b.mean())
        assert ray_b.pairs == local_b.pairs == len(pairs)
    # the value weighting changes the shares: the two budgets are not one array twice
    assert not np.array_equal(ray_budget.sums.total, ray_budget.value_sums.total)
    # With other thread counts the float32 sums inside matrix products split
    # differently: equal to rounding.
    np.testing.assert_allclose(ray_scores, default_threads_scores, atol=1e-6, rtol=0, equal_nan=True)


#: A second driver: joins the cluster named by the config's
#: compute.ray_address, builds the site with compute.engine: ray, and prints
#: the address of the cluster it ran on.
_BUILD_DRIVER = textwrap.dedent("""
    import sys
    from pathlib import Path

    import ray

    from generator.cli import run_build

    config = Path(sys.argv[1])
    run_build(config, progress=False)  # joins the cluster of compute.ray_address
    print("GCS", ray.get_runtime_context().gcs_address)
    ray.shutdown()
""")


@pytest.mark.slow
def test_build_with_ray_engine_joins_the_cluster_and_publishes_the_local_numbers(local_ray, tmp_path):
    from generator.config import load_config, load_corpus
    from generator.model import encode_pairs, load_model
    from generator.scoring import summarise_heads

    items = small_corpus_items(8)
    config = write_project(tmp_path / "p", items, compute={"engine": "ray", "ray_workers": 2, "ray_address": local_ray,
                                                          "batch_size": 4})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    env.pop("RAY_ADDRESS", None)  # the config alone names the cluster
    proc = subprocess.run([sys.executable, "-c", _BUILD_DRIVER, str(config)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"ray build failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    assert f"GCS {local_ray}" in proc.stdout.splitlines()  # it ran on the cluster the setting names

    site = tmp_path / "p" / "site"
    assert (site / "index.html").is_file()
    published = json.loads((site / "data" / "heads.json").read_text(encoding="utf-8"))

    cfg = load_config(config)
    assert cfg.raw.compute.engine == "ray" and cfg.raw.compute.ray_address == local_ray
    lm = load_model(cfg.raw.model.name_or_path, "cpu")
    encoded = encode_pairs(lm, load_corpus(cfg.corpus_path), cfg.raw.model.max_length)
    scores, sums, budget = _local_one_thread(lm, encoded, cfg.raw.compute.batch_size)
    local = summarise_heads(scores, sums, cfg.thresholds, cfg.raw.examples_per_head, budget)

    assert published["corpus"]["pairs"] == len(items)
    assert len(published["heads"]) == len(local) == lm.layers * lm.heads
    for pub, h in zip(published["heads"], local):
        assert (pub["layer"], pub["head"], pub["pattern"]) == (h.layer, h.head, h.label)
        assert pub["scores"] == {k: None if v is None else round(v, 6) for k, v in h.scores.items()}
        assert pub["budget"] == {k: round(v, 6) for k, v in h.budget.items()}
        assert pub["value_budget"] == {k: round(v, 6) for k, v in h.value_budget.items()}
        assert len(pub["budget"]) == 11


def test_init_ray_passes_the_address_and_names_the_setting_when_joining_fails(monkeypatch):
    """``compute.ray_address`` reaches ``ray.init(address=...)`` unchanged,
    with the generator package shipped; a cluster that cannot be joined gives
    an AtlasError naming the setting (Ray's ConnectionError, without a
    cluster: ``ray.init`` is replaced here)."""
    from generator import distributed
    from generator.errors import AtlasError

    calls = []

    def fake_init(**kwargs):
        calls.append(kwargs)
        if kwargs["address"] == "ray://nowhere:10001":
            raise ConnectionError("ray client connection timeout")

    monkeypatch.setattr(ray, "init", fake_init)
    distributed.init_ray("auto")
    assert calls[-1]["address"] == "auto" and calls[-1]["num_cpus"] is None
    assert calls[-1]["runtime_env"]["py_modules"] == [str(ROOT / "generator")]
    with pytest.raises(AtlasError, match=r"compute\.ray_address.*'ray://nowhere:10001'"):
        distributed.init_ray("ray://nowhere:10001")


@pytest.mark.parametrize("value, ok", [
    (None, True), ("auto", True), ("ray://10.0.0.5:10001", True), ("head-node:6379", True),
    ("ray://head", False), ("http://head:8265", False), ("", False), ("auto ", False),
])
def test_ray_address_setting_is_validated(tmp_path, value, ok):
    from generator.config import load_config
    from generator.errors import AtlasError

    config = write_project(tmp_path, small_corpus_items(1), compute={"engine": "ray", "ray_address": value})
    if ok:
        assert load_config(config).raw.compute.ray_address == value
    else:
        message = r"site_config\.yml:\d+: field 'compute\.ray_address': .*must be `auto`"
        with pytest.raises(AtlasError, match=message):
            load_config(config)


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
