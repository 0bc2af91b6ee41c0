"""The machine-readable export of a build: ``data/heads.json``."""

from __future__ import annotations

import json

from generator.pipeline import AtlasData


def heads_json(data: AtlasData, corpus_path: str, page_of) -> str:
    """The machine-readable summary ``data/heads.json`` (sorted keys, fixed
    float rounding: same input -> same bytes). ``page_of(layer, head)`` gives
    each head page's URL relative to the site root."""
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
                if data.analysis is not None and data.analysis.ablation is not None else {}),
             **({"compare": data.compare.head(h.layer, h.head).as_json()} if data.compare is not None else {})}
            for h in data.heads
        ],
    }
    return json.dumps(doc, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
