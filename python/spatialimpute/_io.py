"""Atomic file and directory writes: nothing half-written is ever left at the target path."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path

import numpy as np


class TerminatedError(BaseException):
    """Raised in the main thread when SIGTERM or SIGHUP arrives during an atomic write."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"terminated by signal {signal.Signals(signum).name}")


def _raise_terminated(signum, frame):
    raise TerminatedError(signum)


@contextlib.contextmanager
def _signals_unwind():
    """Turn SIGTERM/SIGHUP into an exception while the block runs, so ``finally`` clauses run.

    Only in the main thread and only for signals still at their default action (a handler
    installed by the application is left alone).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for name in ("SIGTERM", "SIGHUP"):
        sig = getattr(signal, name, None)
        if sig is not None and signal.getsignal(sig) == signal.SIG_DFL:
            previous[sig] = signal.signal(sig, _raise_terminated)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; move it onto ``path`` only if the block succeeds.

    Works for files and directories (an existing target directory is replaced). On an error,
    Ctrl-C, SIGTERM or SIGHUP the temporary folder is removed and the target left as it was;
    a signal then ends the program as it would have (exit status 128 + signal number).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _signals_unwind():
        try:
            with _atomic_path(target) as tmp:
                yield tmp
        except TerminatedError as err:
            raise SystemExit(128 + err.signum) from err


@contextlib.contextmanager
def _atomic_path(target: Path):
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    tmp = tmp_dir / target.name
    try:
        yield tmp
        replace_path(tmp, target)
    finally:
        with _signals_blocked():
            shutil.rmtree(tmp_dir, ignore_errors=True)


def replace_path(tmp: Path, target: Path) -> None:
    """Move ``tmp`` onto ``target`` (an existing target folder is swapped out), never interrupted."""
    with _signals_blocked():
        if target.is_dir() and tmp.is_dir():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)


@contextlib.contextmanager
def _signals_blocked():
    """Hold SIGINT/SIGTERM/SIGHUP until the block is done (delivered right after)."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    held = {getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n)}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


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
