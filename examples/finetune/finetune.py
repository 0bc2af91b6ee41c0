"""Fine-tune a copy of all-MiniLM-L6-v2 as a relevance cross-encoder, then
build an atlas that compares it with the pre-trained model head by head.

The model reads ``[CLS] a [SEP] b [SEP]`` and a classification head on the
[CLS] representation predicts one of five relevance grades, as in the
query-title relevance fine-tuning of BERT studied by its attention differences
(Kovaleva et al. 2019, "Revealing the Dark Secrets of BERT", section 5, for
the method). The grade of a pair is its corpus ``label`` (0 to 5, in half
steps) cut to five classes: ``min(floor(label), 4)``.

Usage (from the repository root, CPU, a few minutes)::

    .venv/bin/python examples/finetune/finetune.py
    .venv/bin/python -m generator build --config examples/finetune/build/site_config.yml

The first command fine-tunes, saves the checkpoint under
``examples/finetune/build/model``, writes the graded corpus and a
``site_config.yml`` with a ``compare:`` section, and builds the site into
``examples/finetune/build/site`` (``--no-build`` skips that); the second
rebuilds the site from the saved checkpoint.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from generator.config import DEFAULT_MODEL, Pair, load_corpus  # noqa: E402
from generator.errors import AtlasError  # noqa: E402
from generator.model import resolve_model_path  # noqa: E402

GRADES = 5


def grade(label: float | None, pair_id: str, corpus: Path) -> int:
    """The relevance grade (class index 0..4) of a corpus label 0..5.

    Raises:
        AtlasError: the pair has no label or one outside [0, 5].
    """
    if label is None or not 0 <= label <= 5:
        raise AtlasError(f"{corpus}: pair {pair_id!r}, field 'label': {label!r} is not a relevance grade in 0..5")
    return min(int(math.floor(label)), GRADES - 1)


def graded_items(pairs: list[Pair], corpus: Path) -> list[dict]:
    """The corpus as YAML items with ``label`` replaced by its grade."""
    out = []
    for p in pairs:
        item = p.model_dump(exclude_none=True, exclude_defaults=True)
        item["id"], item["a"], item["b"] = p.id, p.a, p.b
        item["label"] = grade(p.label, p.id, corpus)
        out.append(item)
    return out


def fine_tune(items: list[dict], out: Path, *, epochs: int = 8, max_steps: int | None = None, lr: float = 1e-4,
              batch_size: int = 8, max_length: int = 128, seed: int = 0) -> dict:
    """Fine-tune all-MiniLM-L6-v2 with a fresh ``GRADES``-class head on
    ``items`` (cross-entropy, AdamW, all weights trained) and save model and
    tokenizer into ``out``.

    Args:
        items: corpus items with ``a``, ``b`` and an integer ``label`` (grade).
        out: the folder the checkpoint is saved to.
        epochs: passes over the corpus; ``max_steps`` stops earlier.
    Returns:
        ``{"steps", "first_loss", "last_loss", "train_accuracy"}``.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # "newly initialized classifier" is the point here
    random.seed(seed)
    torch.manual_seed(seed)
    path = resolve_model_path(DEFAULT_MODEL)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=GRADES, attn_implementation="eager")
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    order = list(range(len(items)))
    losses, step = [], 0
    for _ in range(epochs):
        random.shuffle(order)
        for start in range(0, len(order), batch_size):
            batch = [items[i] for i in order[start:start + batch_size]]
            enc = tokenizer([b["a"] for b in batch], [b["b"] for b in batch], truncation=True,
                            max_length=max_length, padding=True, return_tensors="pt")
            target = torch.tensor([int(b["label"]) for b in batch])
            loss = torch.nn.functional.cross_entropy(model(**enc).logits, target)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            step += 1
            if max_steps is not None and step >= max_steps:
                break
        if max_steps is not None and step >= max_steps:
            break
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(items), batch_size):
            batch = items[start:start + batch_size]
            enc = tokenizer([b["a"] for b in batch], [b["b"] for b in batch], truncation=True,
                            max_length=max_length, padding=True, return_tensors="pt")
            pred = model(**enc).logits.argmax(-1).numpy()
            correct += int((pred == np.array([int(b["label"]) for b in batch])).sum())
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return {"steps": step, "first_loss": losses[0], "last_loss": losses[-1], "train_accuracy": correct / len(items)}


def write_project(folder: Path, items: list[dict], model_dir: Path, **config) -> Path:
    """Write ``corpus.yml`` and a ``site_config.yml`` comparing the default
    model (pre-trained) with ``model_dir`` (fine-tuned) into ``folder``;
    ``config`` entries are merged into the config's top level. Returns the
    config's path."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "content").mkdir(exist_ok=True)
    (folder / "content" / "corpus.yml").write_text(yaml.safe_dump(items, allow_unicode=True, sort_keys=False),
                                                   encoding="utf-8")
    cfg = {
        "site": {"title": "What fine-tuning changed",
                 "description": "all-MiniLM-L6-v2 before and after fine-tuning as a relevance cross-encoder."},
        "model": {"name_or_path": DEFAULT_MODEL, "max_length": 128},
        "compute": {"device": "auto", "batch_size": 32},
        "corpus": "content/corpus.yml",
        "analysis": {"objective": "similarity", "attribution": False, "perturbed_masking": False},
        "compare": {"name_or_path": str(model_dir.resolve()), "before_name": "pre-trained",
                    "after_name": "fine-tuned"},
        "output": {"build_dir": "cache", "site_dir": "site"},
    }
    for key, value in config.items():
        cfg[key] = {**cfg[key], **value} if isinstance(value, dict) and isinstance(cfg.get(key), dict) else value
    path = folder / "site_config.yml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=ROOT / "content" / "corpus.yml")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "build")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-build", action="store_true", help="fine-tune and write the config, build no site")
    args = parser.parse_args(argv)
    try:
        items = graded_items(load_corpus(args.corpus), args.corpus)
        stats = fine_tune(items, args.out / "model", epochs=args.epochs, lr=args.lr, seed=args.seed)
        print(f"fine-tuned {stats['steps']} steps: loss {stats['first_loss']:.3f} -> {stats['last_loss']:.3f}, "
              f"training accuracy {stats['train_accuracy']:.2f}; saved to {args.out / 'model'}")
        config = write_project(args.out, items, args.out / "model")
        print(f"config: {config}")
        if not args.no_build:
            from generator.cli import run_build

            run_build(config)
            print(f"site: {args.out / 'site'}")
    except AtlasError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
