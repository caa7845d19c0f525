"""Inner cross-validation over the panel genes: every candidate predicts every panel gene hidden.

The panel genes are split into folds; in each fold every candidate is trained on the other
panel genes (:meth:`~spatialimpute.data.paired.PairedData.hold_out_features`) and predicts the
hidden ones. Put together, the folds give a held-out prediction of every panel gene by every
candidate, on a sample of the spatial cells: what the ensemble weights, the spatial smoothing
and the reliability model are fitted on.
"""

from __future__ import annotations

import dataclasses
import time
import warnings

import numpy as np

from ..._settings import progress
from ..._validation import SpatialImputeInputError, SpatialImputeWarning
from ...data.paired import PairedData
from ..registry import get_method
from .config import Candidate


@dataclasses.dataclass
class HeldOut:
    """Held-out predictions of the panel genes.

    Attributes
    ----------
    cells
        Spatial cells used (indices into the model's cells, sorted).
    folds
        Feature columns hidden together in each fold.
    truth
        Measured log-normalised panel genes of ``cells`` (cells x features).
    predictions
        Candidate name -> held-out prediction, same shape as ``truth``.
    seconds
        Candidate name -> training and prediction time over all folds.
    failed
        Candidate name -> why it could not run on these data (left out of the ensemble).
    """

    cells: np.ndarray
    folds: list[np.ndarray]
    truth: np.ndarray
    predictions: dict[str, np.ndarray]
    seconds: dict[str, float]
    failed: dict[str, str]


def gene_folds(n_genes: int, n_folds: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Random folds of ``range(n_genes)`` (at most ``n_genes`` of them), each sorted."""
    order = rng.permutation(n_genes)
    return [np.sort(fold) for fold in np.array_split(order, min(n_folds, n_genes)) if fold.size]


def sample_cells(n_cells: int, max_cells: int, rng: np.random.Generator) -> np.ndarray:
    """All cells, or a sorted random sample of ``max_cells`` of them."""
    if n_cells <= max_cells:
        return np.arange(n_cells)
    return np.sort(rng.choice(n_cells, max_cells, replace=False))


#: Relative cost of one fit of each method, to start the dearest tasks first.
_COST_ORDER = {"stgnet": 0, "stimpute": 1, "mapping": 2}


def _train_and_predict(candidate: Candidate, fold_data: PairedData, seed: int, device, num_threads: int | None,
                       in_worker: bool = False):
    """One task: train ``candidate`` on a fold and predict its hidden genes.

    Returns ``(prediction or None, refusal message or None, seconds)``.
    """
    if in_worker:  # a worker process of the pool: no progress bars of its own
        from ..._settings import settings

        settings.progress = False
    start = time.perf_counter()
    try:
        model = get_method(candidate.method).from_paired(fold_data, seed=seed, device=device, num_threads=num_threads,
                                                         reliability=False, **candidate.kwargs())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SpatialImputeWarning)
            out = model.impute(scheduler="synchronous")
    except SpatialImputeInputError as err:
        return None, str(err), time.perf_counter() - start
    return np.asarray(out.X, dtype=np.float32), None, time.perf_counter() - start


def _run_task(k: int, candidate: Candidate, fold_data: PairedData, seed: int, device):
    """A worker process's task: one thread, no progress bars; returns ``(fold, name, result)``."""
    return k, candidate.name, _train_and_predict(candidate, fold_data, seed, device, 1, in_worker=True)


def run_inner_cv(paired: PairedData, candidates: list[Candidate], *, n_folds: int, max_cells: int, seed: int,
                 device, num_threads: int | None, workers: int = 1) -> HeldOut:
    """Held-out predictions of every panel gene by every candidate (see the module docstring).

    With ``workers > 1`` the (fold, candidate) trainings run in that many worker processes
    (loky) of one torch thread each, dearest first; every task is seeded the same way either
    way. A candidate that refuses the fold data (:class:`SpatialImputeInputError`, e.g. too
    few panel genes for its design) is left out with a warning and recorded in ``failed``.
    """
    rng = np.random.default_rng(seed)
    cells = sample_cells(paired.n_cells, max_cells, rng)
    data = paired.subset_cells(cells) if cells.size < paired.n_cells else paired
    folds = gene_folds(paired.n_features, n_folds, rng)
    tasks = sorted(((k, c) for k in range(len(folds)) for c in candidates),
                   key=lambda task: (_COST_ORDER.get(task[1].method, 3), task[0]))
    fold_data = [data.hold_out_features(fold) for fold in folds]
    results = {}
    bar = progress(range(len(tasks)), total=len(tasks), desc="auto: inner cross-validation")
    if workers <= 1:
        for k, c in tasks:
            results[k, c.name] = _train_and_predict(c, fold_data[k], seed, device, num_threads)
            next(bar, None)
    else:
        # loky worker processes (vendored in joblib): fresh interpreters (no fork of a process
        # whose OpenMP or torch threads are running) and no __main__ guard needed; shut down
        # after the call, so that nothing outlives it (an embedding R session never cleans up)
        from concurrent.futures import as_completed

        from joblib.externals.loky import get_reusable_executor

        executor = get_reusable_executor(max_workers=workers)
        try:
            futures = [executor.submit(_run_task, k, c, fold_data[k], seed, device) for k, c in tasks]
            for future in as_completed(futures):
                k, name, result = future.result()
                results[k, name] = result
                next(bar, None)
        finally:
            executor.shutdown(wait=True)
    predictions, seconds, failed = {}, {}, {}
    for c in candidates:
        refusals = [results[k, c.name][1] for k in range(len(folds)) if results[k, c.name][1] is not None]
        if refusals:
            failed[c.name] = refusals[0]
            warnings.warn(f"auto: member {c.name!r} left out: {refusals[0]}", SpatialImputeWarning, stacklevel=2)
            continue
        predictions[c.name] = np.zeros((cells.size, paired.n_features), dtype=np.float32)
        for k, fold in enumerate(folds):
            predictions[c.name][:, fold] = results[k, c.name][0]
        seconds[c.name] = float(sum(results[k, c.name][2] for k in range(len(folds))))
    return HeldOut(cells=cells, folds=folds, truth=np.asarray(data.spatial_X, dtype=np.float32),
                   predictions=predictions, seconds=seconds, failed=failed)
