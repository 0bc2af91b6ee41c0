"""A content-addressed cache of computed arrays under ``build/cache/``.

An entry is a folder named by its key holding ``arrays.npz`` (no pickles),
``meta.json`` and ``manifest.json`` with the sha256 of both; an entry whose
files are missing, truncated, altered or from another cache version is
reported and recomputed, never trusted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
_SOURCES = ("model.py", "patterns.py", "scoring.py", "cache.py", "qk.py")


def code_version() -> str:
    """sha256 (16 hex) of the source of every module that shapes cached numbers,
    plus the torch and transformers versions."""
    import torch
    import transformers

    h = hashlib.sha256(f"{CACHE_FORMAT}:{torch.__version__}:{transformers.__version__}".encode())
    here = Path(__file__).parent
    for name in _SOURCES:
        path = here / name
        if path.exists():
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def make_key(*parts: Any) -> str:
    """sha256 (24 hex) of the JSON of ``parts``."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load(folder: Path, kind: str, key: str) -> tuple[dict[str, np.ndarray], dict] | None:
    """The arrays and meta of entry ``kind/key``, or ``None`` when absent or damaged."""
    entry = folder / kind / key
    if not entry.exists():
        return None
    try:
        manifest = json.loads((entry / "manifest.json").read_text())
        if manifest.get("format") != CACHE_FORMAT or manifest.get("key") != key:
            raise ValueError("written by another cache version")
        for name in ("arrays.npz", "meta.json"):
            if _sha(entry / name) != manifest["sha256"][name]:
                raise ValueError(f"{name} does not match its checksum")
        meta = json.loads((entry / "meta.json").read_text())
        with np.load(entry / "arrays.npz", allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        return arrays, meta
    except Exception as exc:  # any damage means: recompute
        log.warning("cache entry %s is damaged (%s); recomputing", entry, exc)
        shutil.rmtree(entry, ignore_errors=True)
        return None


def store(folder: Path, kind: str, key: str, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Write entry ``kind/key`` atomically (temporary folder, then rename)."""
    target = folder / kind / key
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=target.parent))
    try:
        np.savez(tmp / "arrays.npz", **arrays)
        (tmp / "meta.json").write_text(json.dumps(meta, sort_keys=True))
        manifest = {"format": CACHE_FORMAT, "key": key,
                    "sha256": {name: _sha(tmp / name) for name in ("arrays.npz", "meta.json")}}
        (tmp / "manifest.json").write_text(json.dumps(manifest, sort_keys=True))
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
