"""The machine-readable exports of a build: ``data/heads.json`` and ``data/pair_scores.csv.gz``."""

from __future__ import annotations

import csv
import gzip
import io
import json

import numpy as np

from generator.patterns import classify_all
from generator.pipeline import AtlasData
from generator.registry import PATTERNS


def heads_json(data: AtlasData, corpus_path: str, page_of) -> str:
    """The machine-readable summary ``data/heads.json``.

    Args:
        data: the computed atlas.
        corpus_path: the corpus file as the pages name it.
        page_of: ``page_of(layer, head)`` -> that head page's URL relative to
            the site root.

    Returns:
        JSON text: the model (name, layers, heads), the corpus (path, number
        of pairs), the thresholds and, per head (0-indexed ``layer`` and
        ``head``, layer-major), its ``pattern`` label, its seven ``scores``
        and ``consistency`` (rounded to 6 decimals; ``null`` when undefined),
        its ``page`` and, when head masking ran, its ``importance``. Sorted
        keys and fixed rounding: the same input gives the same bytes.
    """
    doc = {
        "model": {"name_or_path": data.model["name_or_path"], "layers": data.layers, "heads": data.n_heads},
        "corpus": {"path": corpus_path, "pairs": len(data.pairs)},
        "thresholds": data.thresholds,
        "heads": [
            {"layer": h.layer, "head": h.head, "pattern": h.label,
             "scores": {k: (None if v is None else round(v, 6)) for k, v in h.scores.items()},
             "consistency": None if h.consistency is None else round(h.consistency, 6),
             "page": page_of(h.layer, h.head),
             # the attention budget (generator.budget.CATEGORIES), raw and value-weighted
             "budget": {k: round(v, 6) for k, v in h.budget.items()},
             "value_budget": {k: round(v, 6) for k, v in h.value_budget.items()},
             "description": h.description,
             **({"importance": data.analysis.importance_of(h.layer, h.head)}
                if data.analysis is not None and data.analysis.ablation is not None else {}),
             **({"compare": data.compare.head(h.layer, h.head).as_json()} if data.compare is not None else {})}
            for h in data.heads
        ],
    }
    return json.dumps(doc, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def pair_scores_csv_gz(data: AtlasData) -> bytes:
    """Every head's seven scores on every pair, as gzip-compressed CSV (``data/pair_scores.csv.gz``).

    One row per (pair, layer, head): ``pair``, ``id``, ``layer``, ``head``, ``label`` (the head's label
    on that pair alone) and the seven scores (6 decimals; empty where a pair does not define a score).
    Deterministic: the same data give the same bytes (gzip without a timestamp).

    Args:
        data: the computed atlas; reads ``pair_scores`` ``[pairs, layers, heads, 7]``.
    Returns:
        the compressed file's bytes (about 60 bytes a row before compression).
    """
    return pair_scores_csv_gz_of([p.id for p in data.pairs], data.pair_scores, data.thresholds)


def pair_scores_csv_gz_of(ids: list[str], pair_scores: np.ndarray, thresholds: dict[str, float]) -> bytes:
    """:func:`pair_scores_csv_gz` from its inputs alone (picklable, so that a
    build can write the file in a process of its own while it renders pages).

    Args:
        ids: ``[pairs]`` the pairs' ids, in corpus order.
        pair_scores: float32 ``[pairs, layers, heads, 7]``.
        thresholds: the patterns' thresholds (:func:`generator.patterns.classify_all`).
    Returns:
        the compressed file's bytes.
    """
    n_pairs, layers, n_heads = pair_scores.shape[:3]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["pair", "id", "layer", "head", "label", *PATTERNS])
    labels = classify_all(pair_scores, thresholds)
    # csv quotes each id once; the numbers are formatted a row at a time ("nan" -> empty: undefined)
    id_cells = []
    for pair_id in ids:
        cell = io.StringIO()
        csv.writer(cell, lineterminator="").writerow([pair_id])
        id_cells.append(cell.getvalue())
    numbers = ",".join(["%.6f"] * len(PATTERNS))
    rows = pair_scores.reshape(n_pairs, layers * n_heads, len(PATTERNS)).tolist()
    flat_labels = labels.reshape(n_pairs, -1).tolist()
    heads = [f"{layer},{head}" for layer in range(layers) for head in range(n_heads)]
    for index, id_cell in enumerate(id_cells):
        prefix = f"{index},{id_cell},"
        out.writelines(f"{prefix}{where},{label},{(numbers % tuple(values)).replace('nan', '')}\n"
                       for where, label, values in zip(heads, flat_labels[index], rows[index]))
    return gzip.compress(out.getvalue().encode("utf-8"), compresslevel=6, mtime=0)
