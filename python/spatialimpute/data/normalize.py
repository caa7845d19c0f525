"""Library-size normalisation shared by every method and by the benchmark."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


#: Entries of the float64 working copy a function of this package holds at once when it works
#: through a matrix in row chunks (:func:`log_normalize`, :func:`standardize_genes`, ...).
CHUNK_ENTRIES = 2**24


def library_sizes(counts) -> np.ndarray:
    """Per-cell total counts of a cells x genes matrix (dense or sparse), as float64."""
    if sp.issparse(counts):
        return np.asarray(counts.sum(axis=1, dtype=np.float64)).ravel()
    return np.asarray(counts).sum(axis=1, dtype=np.float64)


def log_normalize(counts, library_size: np.ndarray | None = None, target_sum: float | None = None,
                  out: np.ndarray | None = None) -> np.ndarray:
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
    out
        Float32 array of the same shape to write into (may be ``counts`` itself, to
        normalise in place).

    Returns
    -------
    numpy.ndarray
        Dense float32 log-normalised matrix of the same shape.
    """
    lib = library_sizes(counts) if library_size is None else np.asarray(library_size, dtype=np.float64)
    scale = normalization_scale(lib, target_sum)
    if sp.issparse(counts):
        counts = sp.csr_matrix(counts)
    else:
        counts = np.asarray(counts)
    if out is None:
        out = np.empty(counts.shape, dtype=np.float32)
    for rows in row_chunks(counts):
        part = counts[rows]
        out[rows] = log1p_scaled(part.toarray() if sp.issparse(part) else part, scale[rows])
    return out


def normalization_scale(library_size: np.ndarray, target_sum: float | None = None) -> np.ndarray:
    """Per-cell factor ``target_sum / library size`` (0 for cells without counts); ``target_sum``
    defaults to the median of the positive library sizes."""
    lib = np.asarray(library_size, dtype=np.float64)
    positive = lib > 0
    if target_sum is None:
        target_sum = float(np.median(lib[positive])) if positive.any() else 1.0
    scale = np.zeros_like(lib)
    scale[positive] = target_sum / lib[positive]
    return scale


def log1p_scaled(counts: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``log1p(counts * scale[:, None])`` of a dense block, computed in float64, as float32."""
    part = np.asarray(counts).astype(np.float64)
    part *= scale[:, None]
    np.log1p(part, out=part)
    return part.astype(np.float32)


def column_moments(X) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and standard deviation, float64.

    Computed in row chunks (two passes), so no full-size working copy is made; ``X`` is an
    array or anything whose row slices are arrays (a :class:`~spatialimpute.data.panel.PanelMatrix`).
    """
    X = X if hasattr(X, "shape") else np.asarray(X)
    if X.shape[0] == 0:
        return np.zeros(X.shape[1]), np.zeros(X.shape[1])
    mean = sum(np.asarray(X[c]).sum(axis=0, dtype=np.float64) for c in row_chunks(X)) / X.shape[0]
    squares = sum(np.square(np.asarray(X[c]) - mean).sum(axis=0) for c in row_chunks(X))
    return mean, np.sqrt(squares / X.shape[0])


def gene_scales(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-gene (column) mean and inverse standard deviation, float64 (0 for constant genes),
    in row chunks (:func:`column_moments`)."""
    mean, sd = column_moments(X)
    keep = sd > 0
    return mean, np.where(keep, 1.0 / np.where(keep, sd, 1.0), 0.0)


def standardize_genes(X: np.ndarray, scales: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Z-score each gene (column) within one dataset; constant genes become 0.

    Removes per-gene shifts and scale differences between technologies before spatial and
    reference cells are compared. ``scales``: :func:`gene_scales` of the whole dataset when
    ``X`` is some of its rows (default: those of ``X``). Works in row chunks.

    Returns
    -------
    numpy.ndarray
        Float32 matrix of the same shape.
    """
    X = np.asarray(X)
    mean, inv = gene_scales(X) if scales is None else scales
    out = np.empty(X.shape, dtype=np.float32)
    for c in row_chunks(X):
        out[c] = (X[c] - mean) * inv
    return out


def row_chunks(X: np.ndarray) -> list[slice]:
    """Slices of consecutive rows of ``X``, each about :data:`CHUNK_ENTRIES` values."""
    rows = max(1, CHUNK_ENTRIES // max(1, X.shape[1]))
    return [slice(s, s + rows) for s in range(0, X.shape[0], rows)]
