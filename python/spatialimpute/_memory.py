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
    glibc's heap, where they count as resident memory (docs/notes/stgnet.md, "Freed heap
    pages").
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
