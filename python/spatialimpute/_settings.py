"""Global settings: seeding, device resolution, threads and the one progress-bar wrapper."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import Iterable, Iterator, TypeVar

import numpy as np

T = TypeVar("T")


@dataclass
class Settings:
    """Package-wide switches.

    Attributes
    ----------
    progress
        Show tqdm progress bars on long work.
    verbosity
        0 = silent, 1 = warnings (default), 2 = info.
    num_threads
        Number of CPU threads torch may use; ``None`` leaves torch's default.
    """

    progress: bool = True
    verbosity: int = 1
    num_threads: int | None = None


settings = Settings(progress=os.environ.get("SPATIALIMPUTE_PROGRESS", "1") not in ("0", "false", "False"))


def resolve_device(device="auto"):
    """Resolve a device request to a :class:`torch.device`.

    Parameters
    ----------
    device
        ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a
        :class:`torch.device`.

    Returns
    -------
    torch.device
    """
    import torch

    if isinstance(device, torch.device):
        resolved = device
    elif device is None or device == "auto":
        resolved = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    elif isinstance(device, str):
        try:
            resolved = torch.device(device)
        except RuntimeError as err:
            from ._validation import SpatialImputeInputError

            raise SpatialImputeInputError(
                argument="device", expected='"auto", "cpu", "cuda" or "cuda:N"', found=repr(device),
                fix='pass device="auto" to use a GPU when one is present',
            ) from err
    else:
        from ._validation import SpatialImputeInputError

        raise SpatialImputeInputError(
            argument="device", expected="a string or torch.device", found=type(device).__name__,
            fix='pass device="auto"',
        )
    if resolved.type == "cuda" and not torch.cuda.is_available():
        from ._validation import SpatialImputeInputError

        raise SpatialImputeInputError(
            argument="device", expected="a device present on this machine", found=str(resolved),
            fix='no CUDA GPU is visible to torch here; use device="cpu" or device="auto"',
        )
    return resolved


def apply_num_threads(num_threads: int | None = None) -> None:
    """Set torch's CPU thread count from the argument or :attr:`Settings.num_threads`."""
    import torch

    n = num_threads if num_threads is not None else settings.num_threads
    if n is not None:
        torch.set_num_threads(int(n))


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) with ``seed``."""
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def derive_seed(seed: int, stage: str) -> int:
    """Derive a stable per-stage seed from the user's seed and a stage name."""
    acc = seed & 0xFFFFFFFF
    for ch in stage.encode():
        acc = (acc * 1000003 ^ ch) & 0xFFFFFFFF
    return acc


def progress(iterable: Iterable[T], total: int | None = None, desc: str | None = None, **kwargs) -> Iterator[T]:
    """Wrap ``iterable`` in a tqdm bar when :attr:`Settings.progress` is on."""
    if not settings.progress:
        return iter(iterable)
    from tqdm.auto import tqdm

    return iter(tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True, **kwargs))
