"""A content-addressed cache of computed arrays under ``build/cache/``.

An entry is a folder ``<kind>/<key>`` holding ``arrays.npz`` (no pickles),
``meta.json`` and ``manifest.json`` with the sha256 of both; an entry whose
files are missing, truncated, altered or from another cache version is
reported and recomputed, never trusted. :func:`cached` is the one way a build
stage uses it: load, or compute and store.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

log = logging.getLogger(__name__)

#: Version of the entry layout; an entry of another format is recomputed.
CACHE_FORMAT = 1

T = TypeVar("T")
Arrays = dict[str, np.ndarray]


#: The presentation layer: modules that only turn computed numbers into pages,
#: files and commands (paths relative to ``generator/``; a folder ends with
#: ``/``). Editing them never changes a cached number, so they are left out of
#: :func:`code_version`; every other module, a new one included, is in it.
PRESENTATION = ("pages/", "figures.py", "views.py", "links.py", "site.py", "export.py", "cli.py", "bench.py",
                "readme.py", "__main__.py")


def computing_sources() -> list[Path]:
    """The source files whose bytes make up :func:`code_version`: every
    ``generator/**/*.py`` outside :data:`PRESENTATION`, sorted."""
    package = Path(__file__).parent
    return [path for path in sorted(package.rglob("*.py"))
            if not path.relative_to(package).as_posix().startswith(PRESENTATION)]


def code_version() -> str:
    """The version of the code that computes cached numbers: part of every key.

    Returns:
        16 hex digits of the sha256 of :data:`CACHE_FORMAT`, the torch and
        transformers versions, and the path and bytes of every file of
        :func:`computing_sources` (the whole package but its presentation
        layer, so that no module that shapes a number can be left out and
        serve stale results, while editing a page or a figure does not
        recompute the model).
    """
    import torch
    import transformers

    h = hashlib.sha256(f"{CACHE_FORMAT}:{torch.__version__}:{transformers.__version__}".encode())
    package = Path(__file__).parent
    for path in computing_sources():
        h.update(path.relative_to(package).as_posix().encode() + b"\x00")
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def make_key(*parts: Any) -> str:
    """The key of a cache entry.

    Args:
        *parts: what the entry depends on: JSON-serialisable values (others
            are written with ``str``), order significant, dict keys sorted.

    Returns:
        24 hex digits of the sha256 of the JSON of ``parts``.
    """
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load(folder: Path, kind: str, key: str) -> tuple[dict[str, np.ndarray], dict] | None:
    """Read entry ``kind/key``.

    Args:
        folder: the cache folder (``<build_dir>/cache``).
        kind: the stage (``scores``, ``showcase``, ``analysis``).
        key: from :func:`make_key`.

    Returns:
        ``(arrays, meta)`` as stored, or ``None`` when the entry is absent or
        damaged (a damaged entry is logged and deleted).
    """
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
    """Write entry ``kind/key`` atomically (temporary folder, then rename),
    replacing any entry of that key.

    Args:
        folder: the cache folder.
        kind: the stage.
        key: from :func:`make_key`.
        arrays: name -> array (saved with ``np.savez``; dtypes kept).
        meta: JSON-serialisable data (written with sorted keys).
    """
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


def cached(folder: Path, kind: str, key: str, compute: Callable[[], T],
           pack: Callable[[T], tuple[Arrays, dict]], unpack: Callable[[Arrays, dict], T]) -> T:
    """A build stage's result: read from entry ``kind/key``, or computed and stored.

    Args:
        folder: the cache folder (``<build_dir>/cache``).
        kind: the stage's name (the entry's subfolder).
        key: everything the result depends on, from :func:`make_key`.
        compute: makes the result on a miss (loads the model if it needs it).
        pack: result -> ``(arrays, meta)`` for :func:`store`.
        unpack: ``(arrays, meta)`` -> result, the inverse of ``pack``.

    Returns:
        The result: ``unpack`` of the entry on a hit, ``compute()`` on a miss.
    """
    hit = load(folder, kind, key)
    if hit is not None:
        log.info("%s read from cache %s", kind, key)
        return unpack(*hit)
    value = compute()
    store(folder, kind, key, *pack(value))
    return value
