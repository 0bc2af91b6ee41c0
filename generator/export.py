"""The machine-readable export of a build: ``data/heads.json``."""

from __future__ import annotations

import json

from generator.pipeline import AtlasData


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
             **({"importance": data.analysis.importance_of(h.layer, h.head)}
                if data.analysis is not None and data.analysis.ablation is not None else {})}
            for h in data.heads
        ],
    }
    return json.dumps(doc, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
