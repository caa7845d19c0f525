"""Per-gene reliability for any method: learn predicted accuracy from held-out panel genes.

A method predicts some of its own panel genes with those genes hidden (internal gene folds on
a subset of cells). Each held-out gene gets descriptors that can be computed for any imputed
gene (spatial autocorrelation of the prediction, how much of the reference variance the
prediction keeps, detection and level in the reference) and its measured Spearman
correlation. A ridge regression maps descriptors to accuracy; applied to the target genes it
gives ``var["reliability"]``: the predicted Spearman correlation, clipped to [0, 1].
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ._stats import spearman_columns
from .data.spatial_graph import section_knn
from .data.neighbors import neighbor_mean
from .data.normalize import CHUNK_ENTRIES
from .data.paired import PairedData

#: Names of the per-gene descriptors, in column order.
DESCRIPTORS = ("moran_i", "log_cv", "variance_kept", "ref_detection", "ref_mean", "ref_log_cv")


def morans_i(values: np.ndarray, neighbors: np.ndarray) -> np.ndarray:
    """Moran's I of each column of ``values`` on a row-normalised kNN graph.

    Parameters
    ----------
    values
        Cells x genes.
    neighbors
        (cells, k) neighbour indices.

    Returns
    -------
    numpy.ndarray
        One value per gene; 0 for constant genes.
    """
    z = values - values.mean(axis=0, keepdims=True)
    lag = neighbor_mean(z, neighbors)
    denom = (z * z).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (z * lag).sum(axis=0) / denom
    return np.where(denom > 0, out, 0.0)


def gene_descriptors(prediction: np.ndarray, reference: np.ndarray, neighbors: np.ndarray) -> np.ndarray:
    """Descriptors (:data:`DESCRIPTORS`) of imputed genes, one row per gene.

    Genes are described in chunks, so the float64 working copies stay near
    :data:`~spatialimpute.data.normalize.CHUNK_ENTRIES` values however many cells and genes there are.

    Parameters
    ----------
    prediction
        Cells x genes imputed (log-normalised) values.
    reference
        Reference cells x the same genes (log-normalised).
    neighbors
        Spatial kNN indices of the cells in ``prediction``.
    """
    rows = max(prediction.shape[0] * (neighbors.shape[1] + 2), reference.shape[0] * 2, 1)
    chunk = max(1, CHUNK_ENTRIES // rows)
    return np.vstack([_descriptor_rows(prediction[:, s:s + chunk], reference[:, s:s + chunk], neighbors)
                      for s in range(0, prediction.shape[1], chunk)] or [np.empty((0, len(DESCRIPTORS)))])


def _descriptor_rows(prediction: np.ndarray, reference: np.ndarray, neighbors: np.ndarray) -> np.ndarray:
    prediction = np.asarray(prediction, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    eps = 1e-8
    pred_mean, pred_sd = prediction.mean(axis=0), prediction.std(axis=0)
    ref_mean, ref_sd = reference.mean(axis=0), reference.std(axis=0)
    return np.column_stack([
        morans_i(prediction, neighbors),
        np.log((pred_sd + eps) / (pred_mean + eps)),
        np.log((pred_sd**2 + eps) / (ref_sd**2 + eps)),
        (reference > 0).mean(axis=0),
        ref_mean,
        np.log((ref_sd + eps) / (ref_mean + eps)),
    ])


class GeneReliability:
    """Ridge regression from gene descriptors to measured accuracy (Spearman correlation).

    Parameters
    ----------
    alpha
        Ridge penalty on standardised descriptors.
    """

    def __init__(self, alpha: float = 1.0):
        self.alpha = alpha
        self._center = self._scale = self._coef = None
        self._intercept = 0.0

    def fit(self, descriptors: np.ndarray, accuracy: np.ndarray) -> "GeneReliability":
        """Fit on held-out genes' descriptors and their measured accuracy."""
        X = np.asarray(descriptors, dtype=np.float64)
        y = np.asarray(accuracy, dtype=np.float64)
        self._center = X.mean(axis=0)
        self._scale = np.where(X.std(axis=0) > 0, X.std(axis=0), 1.0)
        Z = (X - self._center) / self._scale
        self._intercept = float(y.mean())
        gram = Z.T @ Z + self.alpha * np.eye(Z.shape[1])
        self._coef = np.linalg.solve(gram, Z.T @ (y - self._intercept))
        return self

    def predict(self, descriptors: np.ndarray, clip: bool = True) -> np.ndarray:
        """Predicted accuracy, clipped to [0, 1] unless ``clip=False``."""
        Z = (np.asarray(descriptors, dtype=np.float64) - self._center) / self._scale
        raw = Z @ self._coef + self._intercept
        return np.clip(raw, 0.0, 1.0) if clip else raw


def _gene_folds(n_genes: int, n_folds: int, rng: np.random.Generator) -> list[np.ndarray]:
    order = rng.permutation(n_genes)
    return [fold for fold in np.array_split(order, min(n_folds, n_genes)) if fold.size]


def reliability_from_heldout(
    paired: PairedData,
    predict_heldout: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray],
    target_prediction: np.ndarray | Callable[[np.ndarray], np.ndarray],
    *,
    n_folds: int = 5,
    max_cells: int = 20_000,
    spatial_neighbors: int = 6,
    seed: int = 0,
) -> np.ndarray:
    """Reliability of each target gene, learnt from the method's own held-out panel genes.

    Parameters
    ----------
    paired
        The aligned data.
    predict_heldout
        ``predict_heldout(train_cols, heldout_cols, cells)`` -> (len(cells), len(heldout_cols))
        predictions of the held-out feature genes from the training feature genes only
        (column indices into ``paired.feature_genes``, row indices into the spatial cells).
    target_prediction
        The prediction of the target genes (cells x targets) whose descriptors are scored,
        or a function of spatial cell indices returning their rows: the model is fitted on
        ``predict_heldout``'s predictions, so these should come from the same predictor
        (a method whose held-out genes come from a stand-in passes the stand-in's targets).
    n_folds
        Internal gene folds.
    max_cells
        Cells used (a random subset above this), to bound the cost.
    spatial_neighbors
        Neighbours in the spatial graph for Moran's I.
    seed
        Seed for the cell subset and the folds.

    Returns
    -------
    numpy.ndarray
        Reliability per target gene in [0, 1].
    """
    n_targets = paired.n_targets
    if paired.n_features < 3:
        return np.full(n_targets, np.nan)
    rng = np.random.default_rng(seed)
    cells = np.sort(rng.choice(paired.n_cells, max_cells, replace=False)) if paired.n_cells > max_cells else np.arange(paired.n_cells)
    neighbors = section_knn(paired.coords[cells], spatial_neighbors, paired.sample_ids[cells])
    all_cols = np.arange(paired.n_features)
    descriptors, accuracy = [], []
    for heldout in _gene_folds(paired.n_features, n_folds, rng):
        train = np.setdiff1d(all_cols, heldout)
        pred = np.asarray(predict_heldout(train, heldout, cells), dtype=np.float64)
        truth = paired.spatial_X[np.ix_(cells, heldout)]
        accuracy.append(spearman_columns(truth, pred))
        descriptors.append(gene_descriptors(pred, paired.reference_X[:, heldout], neighbors))
    model = GeneReliability().fit(np.vstack(descriptors), np.concatenate(accuracy))
    targets = target_prediction(cells) if callable(target_prediction) else target_prediction[cells]
    target_desc = gene_descriptors(targets, paired.reference_targets, neighbors)
    return model.predict(target_desc)
