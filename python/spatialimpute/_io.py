"""Atomic file and directory writes: nothing half-written is ever left at the target path."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; move it onto ``path`` only if the block succeeds.

    Works for files and directories (an existing target directory is replaced).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    tmp = tmp_dir / target.name
    try:
        yield tmp
        if target.is_dir() and tmp.is_dir():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def write_h5ad(adata, path: str | os.PathLike) -> None:
    """Write ``adata`` to ``path`` atomically (compressed h5ad)."""
    with atomic_path(path) as tmp:
        adata.write_h5ad(tmp, compression="gzip")


def write_text(text: str, path: str | os.PathLike) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    write_bytes(text.encode("utf-8"), path)


def write_bytes(data: bytes, path: str | os.PathLike) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)


def jsonable(obj):
    """Convert numpy scalars/arrays, tuples and non-finite floats into JSON-ready Python objects.

    NaN and infinities become ``None`` (JSON has no such numbers).
    """
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [jsonable(v) for v in obj.tolist()]
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    return obj
