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


def run_inner_cv(paired: PairedData, candidates: list[Candidate], *, n_folds: int, max_cells: int, seed: int,
                 device, num_threads: int | None) -> HeldOut:
    """Held-out predictions of every panel gene by every candidate (see the module docstring).

    A candidate that refuses the fold data (:class:`SpatialImputeInputError`, e.g. too few
    panel genes for its design) is left out with a warning and recorded in ``failed``.
    """
    rng = np.random.default_rng(seed)
    cells = sample_cells(paired.n_cells, max_cells, rng)
    data = paired.subset_cells(cells) if cells.size < paired.n_cells else paired
    folds = gene_folds(paired.n_features, n_folds, rng)
    predictions = {c.name: np.zeros((cells.size, paired.n_features), dtype=np.float32) for c in candidates}
    seconds = {c.name: 0.0 for c in candidates}
    failed: dict[str, str] = {}
    for k, fold in enumerate(folds):
        fold_data = data.hold_out_features(fold)
        for candidate in progress(candidates, total=len(candidates), desc=f"inner fold {k + 1}/{len(folds)}"):
            if candidate.name in failed:
                continue
            start = time.perf_counter()
            try:
                model = get_method(candidate.method).from_paired(
                    fold_data, seed=seed, device=device, num_threads=num_threads, reliability=False,
                    **candidate.kwargs())
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", SpatialImputeWarning)
                    out = model.impute(scheduler="synchronous")
            except SpatialImputeInputError as err:
                failed[candidate.name] = str(err)
                warnings.warn(f"auto: member {candidate.name!r} left out: {err}", SpatialImputeWarning, stacklevel=2)
                continue
            predictions[candidate.name][:, fold] = np.asarray(out.X, dtype=np.float32)
            seconds[candidate.name] += time.perf_counter() - start
    for name in failed:
        predictions.pop(name)
        seconds.pop(name)
    return HeldOut(cells=cells, folds=folds, truth=np.asarray(data.spatial_X, dtype=np.float32),
                   predictions=predictions, seconds=seconds, failed=failed)
