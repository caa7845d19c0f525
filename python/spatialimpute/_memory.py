"""Hand heap memory that PyTorch has freed back to the operating system."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return None


def release_freed_memory() -> None:
    """Return free heap pages to the OS (glibc ``malloc_trim(0)``); a no-op elsewhere.

    A long CPU loop that allocates and frees large tensors leaves the freed pages in
    glibc's heap, where they count as resident memory: STGNET's stage 5 on 100k simulated
    cells (101 epochs) peaked at 5.5 GiB resident without this and at 2.6 GiB with it, for
    the same live tensors.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
