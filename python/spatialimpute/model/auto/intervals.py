"""Calibrated uncertainty from the inner cross-validation: split-conformal intervals.

Per gene: the reliability model (:class:`~spatialimpute.reliability.GeneReliability`,
descriptors -> Spearman correlation) is cross-fitted over the held-out panel genes; the
quantile of its absolute errors gives an interval around the predicted correlation of every
target gene.

Per cell and gene: the held-out residuals of the panel genes, divided by a scale known for
any gene and cell (the gene's standard deviation in the reference plus the spread of the
prediction over the cell's spatial neighbours), give conformity scores; their quantile in
each group of similar cells (k-means on the panel genes, as TISSUE groups cells) scales the
interval ``prediction +- q * scale`` of every target gene in that group.
"""

from __future__ import annotations

import numpy as np

from ...data.neighbors import neighbor_mean
from ...reliability import GeneReliability


def conformal_quantile(scores: np.ndarray, level: float) -> float:
    """The split-conformal quantile: the ``ceil((n + 1) level) / n`` empirical quantile of ``scores``."""
    scores = np.sort(np.asarray(scores, dtype=np.float64).ravel())
    n = scores.size
    if n == 0:
        return float("nan")
    rank = min(n, int(np.ceil((n + 1) * level)))
    return float(scores[rank - 1])


def gene_reliability(descriptors: np.ndarray, accuracy: np.ndarray, target_descriptors: np.ndarray, *,
                     level: float, seed: int, n_folds: int = 5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Predicted Spearman correlation of each target gene with a conformal interval.

    Returns
    -------
    (predicted, lower, upper)
        Per target gene; ``predicted`` is clipped to [0, 1] (the ``reliability`` column); the
        interval, of the Spearman correlation itself, is centred on it and clipped to [-1, 1].
    """
    accuracy = np.asarray(accuracy, dtype=np.float64)
    usable = np.isfinite(descriptors).all(axis=1) & np.isfinite(accuracy)  # e.g. a gene measured as all zeros
    descriptors, accuracy = np.asarray(descriptors)[usable], accuracy[usable]
    rng = np.random.default_rng(seed)
    errors = np.empty_like(accuracy)
    folds = np.array_split(rng.permutation(accuracy.size), min(n_folds, accuracy.size))
    for fold in folds:
        train = np.setdiff1d(np.arange(accuracy.size), fold)
        if train.size < 2:
            errors[fold] = np.abs(accuracy[fold] - np.clip(accuracy.mean(), 0.0, 1.0))
            continue
        model = GeneReliability().fit(descriptors[train], accuracy[train])
        errors[fold] = np.abs(accuracy[fold] - model.predict(descriptors[fold]))
    half = conformal_quantile(errors, level)
    predicted = GeneReliability().fit(descriptors, accuracy).predict(target_descriptors)
    return predicted, np.clip(predicted - half, -1.0, 1.0), np.clip(predicted + half, -1.0, 1.0)


def local_spread(values: np.ndarray, rows: np.ndarray, neighbors: np.ndarray) -> np.ndarray:
    """Standard deviation of ``values`` over each of ``rows``' neighbours and itself.

    ``values`` holds the rows that ``rows`` and ``neighbors`` index (cells x genes).
    """
    group = np.column_stack([rows, neighbors])
    mean = neighbor_mean(values, group)
    squares = np.zeros_like(mean)
    for column in group.T:  # one member of every group at a time: no (cells x k x genes) table
        deviation = values[column] - mean
        squares += deviation * deviation
    return np.sqrt(squares / group.shape[1])


def interval_scale(reference_sd: np.ndarray, spread: np.ndarray) -> np.ndarray:
    """The per-cell, per-gene scale the conformity scores are measured in."""
    return reference_sd[None, :] + spread


def group_quantiles(residuals: np.ndarray, scale: np.ndarray, groups: np.ndarray, n_groups: int,
                    level: float) -> np.ndarray:
    """Conformal quantile of ``|residual| / scale`` in each cell group (all cells for an empty group)."""
    scores = np.abs(residuals) / scale
    overall = conformal_quantile(scores, level)
    out = np.full(n_groups, overall)
    for g in range(n_groups):
        members = groups == g
        if members.sum() >= 20:
            out[g] = conformal_quantile(scores[members], level)
    return out
