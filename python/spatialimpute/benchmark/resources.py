"""Cost measurement for the benchmark: wall time, peak resident memory, peak GPU memory."""

from __future__ import annotations

import os
import platform
import resource
import sys
import time

__all__ = ["ResourceMonitor", "machine_info", "current_rss_bytes"]

_CLEAR_REFS = "/proc/self/clear_refs"
_STATUS = "/proc/self/status"


def _status_kib(field: str) -> int | None:
    try:
        with open(_STATUS, encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def current_rss_bytes() -> int | None:
    """Resident set size of this process now (Linux ``/proc``), or ``None`` if unknown."""
    kib = _status_kib("VmRSS")
    return None if kib is None else kib * 1024


def lifetime_peak_rss_bytes() -> int:
    """Peak resident set size of this process since it started, in bytes."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024  # bytes on macOS, KiB on Linux


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux >= 4.0: write 5 to clear_refs)."""
    try:
        with open(_CLEAR_REFS, "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


class ResourceMonitor:
    """Context manager measuring the wall time and peak memory of a block of work.

    Peak RSS is the whole process's resident memory high-water mark during the block (which
    covers torch's allocations, unlike :mod:`tracemalloc`): on Linux the kernel's mark is reset
    on entry (``/proc/self/clear_refs``) and ``VmHWM`` read on exit; elsewhere the process
    lifetime peak is reported and ``peak_rss_scope`` says so. On a CUDA device the peak of
    ``torch.cuda.max_memory_allocated`` during the block is recorded as well.

    Parameters
    ----------
    device
        The :class:`torch.device` the work runs on (or ``None``).

    Attributes
    ----------
    wall_s, peak_rss_bytes, start_rss_bytes, peak_gpu_bytes, peak_rss_scope
        Filled on exit.
    """

    def __init__(self, device=None):
        self.device = device
        self.wall_s: float | None = None
        self.peak_rss_bytes: int | None = None
        self.start_rss_bytes: int | None = None
        self.peak_gpu_bytes: int | None = None
        self.peak_rss_scope = "block"
        self._t0 = 0.0
        self._reset_ok = False

    def _is_cuda(self) -> bool:
        return self.device is not None and getattr(self.device, "type", str(self.device)).startswith("cuda")

    def __enter__(self) -> "ResourceMonitor":
        if self._is_cuda():
            import torch

            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        self.start_rss_bytes = current_rss_bytes()
        self._reset_ok = _reset_peak_rss()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._is_cuda():
            import torch

            torch.cuda.synchronize(self.device)
            self.peak_gpu_bytes = int(torch.cuda.max_memory_allocated(self.device))
        self.wall_s = time.perf_counter() - self._t0
        hwm = _status_kib("VmHWM") if self._reset_ok else None
        if hwm is not None:
            self.peak_rss_bytes = hwm * 1024
        else:
            self.peak_rss_bytes = lifetime_peak_rss_bytes()
            self.peak_rss_scope = "process_lifetime"

    def as_dict(self) -> dict:
        """The measurements as a JSON-ready dict (memory in MiB)."""
        mib = 1024.0**2
        return {
            "wall_s": self.wall_s,
            "peak_rss_mib": None if self.peak_rss_bytes is None else self.peak_rss_bytes / mib,
            "start_rss_mib": None if self.start_rss_bytes is None else self.start_rss_bytes / mib,
            "peak_gpu_mib": None if self.peak_gpu_bytes is None else self.peak_gpu_bytes / mib,
            "peak_rss_scope": self.peak_rss_scope,
        }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device=None) -> dict:
    """Describe the machine a benchmark ran on (CPU, threads, device, versions)."""
    import numpy as np
    import torch

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    info = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_usable": usable,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "device": None if device is None else str(device),
        "device_name": None,
    }
    if device is not None and str(device).startswith("cuda"):
        info["device_name"] = torch.cuda.get_device_name(device)
    elif device is not None:
        info["device_name"] = info["cpu_model"]
    try:
        from importlib.metadata import version

        info["spatialimpute"] = version("spatialimpute")
    except Exception:  # package metadata absent in a source checkout
        info["spatialimpute"] = None
    return info
