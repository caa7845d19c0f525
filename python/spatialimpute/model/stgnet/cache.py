"""Process-wide cache of STGNET's reference stages (1-2).

Stages 1-2 see only the reference, so models built on the same reference with the same
configuration and seed (the folds of a cross-validation) train them once. An entry is keyed
by :func:`reference_key`: a digest of both resolved configurations, the data the stages
train on and the seed; it holds CPU copies of the trained state dicts and their history.
Everything the stages read is laid out with the genes sorted by name, whichever genes a
fold holds out, so an entry is what a model of another fold would have trained itself.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict

import numpy as np
import torch

__all__ = ["clear_reference_cache", "get", "put", "reference_key"]

#: Entries kept (least recently used ones are dropped first).
CACHE_SIZE = 4
_CACHE: "OrderedDict[str, dict]" = OrderedDict()


def clear_reference_cache() -> None:
    """Forget the stage 1-2 networks cached in this process."""
    _CACHE.clear()


def reference_key(configs, arrays, *, seed: int, device) -> str:
    """Digest of ``configs`` (their ``to_dict()``), the ``arrays`` the stages train on, the
    seed and the device."""
    h = hashlib.sha256()
    h.update(json.dumps([type(c).__name__ for c in configs] + [c.to_dict() for c in configs], sort_keys=True).encode())
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    h.update(f"{seed}|{torch.device(device)}".encode())
    return h.hexdigest()


def get(key: str) -> dict | None:
    """The cached entry ``{"state": {network: state dict}, "history": ...}`` or ``None``."""
    entry = _CACHE.get(key)
    if entry is not None:
        _CACHE.move_to_end(key)
    return entry


def put(key: str, networks: dict, history: dict) -> None:
    """Cache CPU copies of ``networks``' state dicts and the ``history`` under ``key``."""
    _CACHE[key] = {
        "state": {name: {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
                  for name, net in networks.items()},
        "history": {k: list(v) for k, v in history.items()},
    }
    while len(_CACHE) > CACHE_SIZE:
        _CACHE.popitem(last=False)
