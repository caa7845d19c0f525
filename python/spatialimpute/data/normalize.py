"""Library-size normalisation shared by every method and by the benchmark."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def library_sizes(counts) -> np.ndarray:
    """Per-cell total counts of a cells x genes matrix (dense or sparse), as float64."""
    if sp.issparse(counts):
        return np.asarray(counts.sum(axis=1), dtype=np.float64).ravel()
    return np.asarray(counts, dtype=np.float64).sum(axis=1)


def log_normalize(counts, library_size: np.ndarray | None = None, target_sum: float | None = None) -> np.ndarray:
    """Normalise counts per cell and take ``log1p`` (the SpaGE / Li et al. convention).

    Each cell is divided by its library size and multiplied by ``target_sum`` (default: the
    median library size over cells with a positive total), then ``log1p`` is applied. Cells
    whose library size is 0 stay all-zero.

    Parameters
    ----------
    counts
        Cells x genes raw counts, dense or sparse.
    library_size
        Per-cell totals to divide by; default: the row sums of ``counts``. Pass the totals of
        the full gene set when ``counts`` holds only some of the genes.
    target_sum
        Scale after division; default the median of the positive library sizes.

    Returns
    -------
    numpy.ndarray
        Dense float32 log-normalised matrix of the same shape.
    """
    lib = library_sizes(counts) if library_size is None else np.asarray(library_size, dtype=np.float64)
    positive = lib > 0
    if target_sum is None:
        target_sum = float(np.median(lib[positive])) if positive.any() else 1.0
    scale = np.zeros_like(lib)
    scale[positive] = target_sum / lib[positive]
    dense = counts.toarray() if sp.issparse(counts) else np.asarray(counts)
    out = dense.astype(np.float64, copy=True)
    out *= scale[:, None]
    np.log1p(out, out=out)
    return out.astype(np.float32)


def standardize_genes(X: np.ndarray) -> np.ndarray:
    """Z-score each gene (column) within one dataset; constant genes become 0.

    Removes per-gene shifts and scale differences between technologies before spatial and
    reference cells are compared.

    Returns
    -------
    numpy.ndarray
        Float32 matrix of the same shape.
    """
    X = np.asarray(X)
    mean = X.mean(axis=0, keepdims=True)
    sd = X.std(axis=0, keepdims=True)
    return np.divide(X - mean, sd, out=np.zeros(X.shape, dtype=np.float32), where=sd > 0).astype(np.float32)
