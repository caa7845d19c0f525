"""Prediction in blocks of cells, run as dask tasks (local threads by default, or a distributed cluster).

:class:`BlockRunner` sends the trained model to the workers once and maps one of its block
methods over blocks of cells, yielding results as blocks finish (with a progress bar).
"""

from __future__ import annotations

import os

import numpy as np

from .._settings import apply_num_threads, progress
from .._validation import SpatialImputeInputError

#: Output entries (cells x target genes) per block when no block size is given: 64 MiB of float32.
BLOCK_ENTRIES = 2**24
#: Names of dask's local schedulers that share the model in memory (no copy per task).
LOCAL_SCHEDULERS = ("threads", "synchronous", "sync", "single-threaded")


def default_block_size(n_cells: int, n_targets: int) -> int:
    """Cells per block so that a block's output holds about :data:`BLOCK_ENTRIES` values."""
    return max(1, min(n_cells, BLOCK_ENTRIES // max(1, n_targets)))


def _task_threads(model) -> int | None:
    """Torch threads of a block task: one in a distributed worker (each of its threads runs one
    block on one core), the model's own in this process."""
    try:
        from distributed import get_worker

        get_worker()
    except (ImportError, ValueError):
        return model.num_threads
    return 1


def _scan_task(model, cells: np.ndarray):
    import torch

    apply_num_threads(_task_threads(model))
    with torch.no_grad():
        return model._scan_block(cells)


def _predict_task(model, cells: np.ndarray, stats, store, block: int):
    import torch

    apply_num_threads(_task_threads(model))
    with torch.no_grad():
        rows = model._block_rows(cells, stats)
    if store is None:
        return rows
    store.write(block, rows)
    return None


class BlockRunner:
    """Run a model's block methods as dask tasks.

    Parameters
    ----------
    model
        The trained model (sent to a distributed cluster's workers once, with ``scatter``).
    scheduler
        ``None`` or ``"threads"`` (dask's local threaded scheduler, one worker per
        ``cpu_count // torch threads``), ``"synchronous"`` (one block at a time in this
        thread), a ``distributed.Client`` or a scheduler address (``"tcp://host:8786"``).
        On a cluster each task runs with one torch thread: a worker runs as many blocks at
        once as it has threads.
    """

    def __init__(self, model, scheduler=None):
        self.model = model
        self.client, self._own_client, self._model_ref = None, False, model
        if scheduler is None:
            scheduler = "threads"
        if isinstance(scheduler, str) and scheduler in LOCAL_SCHEDULERS:
            import torch

            self.scheduler = scheduler
            self.workers = 1 if scheduler != "threads" else max(1, (os.cpu_count() or 1) // torch.get_num_threads())
            return
        if isinstance(scheduler, str) and ":" not in scheduler:
            raise SpatialImputeInputError(
                "scheduler", f"one of {list(LOCAL_SCHEDULERS)}, a distributed Client or a scheduler address",
                repr(scheduler), "e.g. scheduler='threads' or scheduler='tcp://127.0.0.1:8786'",
            )
        try:
            import distributed
        except ImportError as err:
            raise SpatialImputeInputError("scheduler", "dask.distributed installed for a cluster", "it is missing",
                                          "pip install 'spatialimpute[distributed]'") from err
        if isinstance(scheduler, distributed.Client):
            self.client = scheduler
        elif isinstance(scheduler, str):
            self.client, self._own_client = distributed.Client(scheduler), True
        else:
            raise SpatialImputeInputError("scheduler", "a scheduler name, a distributed Client or an address",
                                          type(scheduler).__name__, "e.g. scheduler=distributed.Client(cluster)")
        self.scheduler = f"distributed:{self.client.scheduler.address}"
        self._model_ref = self.client.scatter(model, broadcast=True, hash=False)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.client is not None:
            self._model_ref.release()
            if self._own_client:
                self.client.close()

    def scan(self, blocks: list[np.ndarray]) -> list:
        """``model._scan_block`` of every block (in block order)."""
        parts: list = [None] * len(blocks)
        for i, part in self._map(_scan_task, [(cells,) for cells in blocks], "scan blocks"):
            parts[i] = part
        return parts

    def predict(self, blocks: list[np.ndarray], todo: list[int], stats, store):
        """Yield ``(block, rows)`` for the blocks ``todo`` as they finish (``rows`` is None with a store)."""
        args = [(blocks[i], stats, store, i) for i in todo]
        for j, rows in self._map(_predict_task, args, "impute blocks"):
            yield todo[j], rows

    def _map(self, fn, args: list[tuple], desc: str):
        bar = progress(range(len(args)), total=len(args), desc=desc)
        if self.client is None:
            import dask

            task = dask.delayed(fn, pure=False)
            for start in range(0, len(args), self.workers):
                wave = range(start, min(start + self.workers, len(args)))
                results = dask.compute(*[task(self.model, *args[j]) for j in wave], scheduler=self.scheduler,
                                       num_workers=self.workers)
                for j, result in zip(wave, results):
                    next(bar, None)
                    yield j, result
            return
        from distributed import as_completed

        futures = {self.client.submit(fn, self._model_ref, *a, pure=False): j for j, a in enumerate(args)}
        try:
            for future in as_completed(list(futures)):
                result = future.result()
                next(bar, None)
                yield futures.pop(future), result
        finally:
            self.client.cancel(list(futures))
