"""Per-gene and per-cell accuracy metrics of an imputation (docs/benchmark.md, "Metrics").

Every metric compares a measured matrix ``truth`` with a predicted matrix ``pred`` of the same
shape (cells x genes). Per-gene metrics are computed over cells, one value per gene column;
per-cell metrics over genes, one value per cell row. Everything is computed in float64 on the
whole matrix at once (in blocks of genes to bound memory), never gene by gene in Python.

Conventions for degenerate vectors (documented here once, used everywhere):

- A vector is *constant* when its maximum equals its minimum exactly (this includes the
  all-zero vector). Pearson and Spearman correlations with a constant vector are undefined;
  they are reported as ``0`` and flagged in ``pcc_undefined`` / ``spcc_undefined``.
- A cosine similarity with an all-zero vector is undefined; it is reported as ``0`` and
  flagged in ``css_gene_undefined`` (``css_cell_undefined`` per cell).
- Min-max scaling (for ``ssim``) and z-scoring (for ``rmse``) map a constant vector to the
  all-zero vector (the convention of scikit-learn's ``MinMaxScaler`` / ``StandardScaler``,
  which use a unit scale for zero-range features).
- Jensen-Shannon: negative values are clipped to 0 before normalising to a distribution;
  a vector that is all-zero after clipping counts as the uniform distribution.

The number of undefined values is also recorded in ``DataFrame.attrs["n_undefined"]``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.special import rel_entr

from .._stats import average_ranks, constant_columns, pearson_columns

__all__ = [
    "gene_metrics",
    "cell_metrics",
    "spearman_vectors",
    "GENE_METRICS",
    "CELL_METRICS",
    "HIGHER_IS_BETTER",
]

#: Per-gene metric columns, in output order.
GENE_METRICS = ("spcc", "pcc", "ssim", "rmse", "js", "css_gene", "mse_gene")
#: Per-cell metric columns, in output order.
CELL_METRICS = ("css_cell", "mse_cell")
#: Direction of every metric (True: larger is better).
HIGHER_IS_BETTER = {
    "spcc": True, "pcc": True, "ssim": True, "rmse": False, "js": False,
    "css_gene": True, "mse_gene": False, "css_cell": True, "mse_cell": False,
}

#: SSIM stabilising constants of Li et al. (dynamic range L = 1 after min-max scaling).
SSIM_C1 = 0.01**2
SSIM_C2 = 0.03**2

# Elements per block when a metric needs a few temporary matrices (about 64 MiB of float64).
_BLOCK_ELEMENTS = 1 << 23


def _input_error(argument: str, expected: str, found: str, fix: str) -> ValueError:
    try:
        from .._validation import SpatialImputeInputError
    except ImportError:  # the validation module is optional for these pure functions
        return ValueError(f"{argument}: expected {expected}; found {found}. Fix: {fix}")
    return SpatialImputeInputError(argument=argument, expected=expected, found=found, fix=fix)


def _as_matrix(x, argument: str) -> tuple[np.ndarray, pd.Index | None, pd.Index | None]:
    """Return ``(float64 dense array, row names or None, column names or None)``."""
    rows = cols = None
    if isinstance(x, pd.DataFrame):
        rows, cols = x.index, x.columns
        values = x.to_numpy(dtype=np.float64)
    elif hasattr(x, "obs_names") and hasattr(x, "var_names") and hasattr(x, "X"):  # AnnData
        rows, cols = pd.Index(x.obs_names), pd.Index(x.var_names)
        values = x.X
        if values is None:
            raise _input_error(argument, "an AnnData with a matrix in .X", "X is None",
                               "store the expression matrix in .X")
    else:
        values = x
    if sp.issparse(values):
        values = values.toarray()
    try:
        arr = np.array(values, dtype=np.float64)  # always a private copy
    except (TypeError, ValueError) as err:
        raise _input_error(argument, "a numeric cells x genes matrix", type(x).__name__,
                           "pass a numpy array, scipy sparse matrix, DataFrame or AnnData") from err
    if arr.ndim != 2:
        raise _input_error(argument, "a 2-D cells x genes matrix", f"{arr.ndim}-D array of shape {arr.shape}",
                           "reshape to (n_cells, n_genes); use x.reshape(-1, 1) for a single gene")
    if not np.isfinite(arr).all():
        n_bad = int((~np.isfinite(arr)).sum())
        raise _input_error(argument, "finite values", f"{n_bad} NaN/Inf entries",
                           "remove or replace non-finite values before scoring")
    return arr, rows, cols


def _pair(truth, pred) -> tuple[np.ndarray, np.ndarray, pd.Index | None, pd.Index | None]:
    t, t_rows, t_cols = _as_matrix(truth, "truth")
    p, p_rows, p_cols = _as_matrix(pred, "pred")
    if t.shape != p.shape:
        raise _input_error("pred", f"the shape of truth {t.shape} (cells x genes)", f"shape {p.shape}",
                           "score the same cells and genes in the same order")
    if t.shape[0] < 1 or t.shape[1] < 1:
        raise _input_error("truth", "at least one cell and one gene", f"shape {t.shape}",
                           "pass a non-empty matrix")
    for name, a, b in (("gene", t_cols, p_cols), ("cell", t_rows, p_rows)):
        if a is not None and b is not None and not a.equals(b):
            raise _input_error("pred", f"the same {name} names as truth, in the same order",
                               f"different {name} names (first truth/pred: {a[0]!r}/{b[0]!r})",
                               f"reorder pred to truth's {name}s, e.g. pred.loc[truth.index, truth.columns]")
    rows = t_rows if t_rows is not None else p_rows
    cols = t_cols if t_cols is not None else p_cols
    return t, p, rows, cols


def _blocks(n_rows: int, n_cols: int):
    width = max(1, _BLOCK_ELEMENTS // max(n_rows, 1))
    for start in range(0, n_cols, width):
        yield slice(start, min(start + width, n_cols))


def _minmax_columns(x: np.ndarray) -> np.ndarray:
    lo = x.min(axis=0)
    span = x.max(axis=0) - lo
    scale = np.where(span > 0, span, 1.0)
    out = (x - lo) / scale
    out[:, span == 0] = 0.0
    return out


def _zscore_columns(x: np.ndarray) -> np.ndarray:
    constant = constant_columns(x)
    xc = x - x.mean(axis=0)
    sd = np.sqrt(np.mean(xc * xc, axis=0))  # population standard deviation
    out = xc / np.where(constant | (sd == 0), 1.0, sd)
    out[:, constant | (sd == 0)] = 0.0
    return out


def _ssim_columns(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    xs, ys = _minmax_columns(x), _minmax_columns(y)
    mx, my = xs.mean(axis=0), ys.mean(axis=0)
    xc, yc = xs - mx, ys - my
    vx = np.mean(xc * xc, axis=0)
    vy = np.mean(yc * yc, axis=0)
    cxy = np.mean(xc * yc, axis=0)
    return ((2 * mx * my + SSIM_C1) * (2 * cxy + SSIM_C2)) / ((mx**2 + my**2 + SSIM_C1) * (vx + vy + SSIM_C2))


def _distribution_columns(x: np.ndarray) -> np.ndarray:
    xp = np.clip(x, 0.0, None)
    total = xp.sum(axis=0)
    zero = total <= 0
    out = xp / np.where(zero, 1.0, total)
    out[:, zero] = 1.0 / x.shape[0]
    return out


def _js_columns(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    p, q = _distribution_columns(x), _distribution_columns(y)
    m = 0.5 * (p + q)
    js = 0.5 * rel_entr(p, m).sum(axis=0) + 0.5 * rel_entr(q, m).sum(axis=0)
    return np.maximum(js, 0.0)


def _cosine(x: np.ndarray, y: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    subs = "ij,ij->j" if axis == 0 else "ij,ij->i"
    num = np.einsum(subs, x, y)
    nx = np.sqrt(np.einsum(subs, x, x))
    ny = np.sqrt(np.einsum(subs, y, y))
    undefined = (nx == 0) | (ny == 0)
    out = np.zeros(num.shape)
    out[~undefined] = num[~undefined] / (nx[~undefined] * ny[~undefined])
    np.clip(out, -1.0, 1.0, out=out)
    return out, undefined


def spearman_vectors(a, b) -> tuple[float, bool]:
    """Spearman correlation of two 1-D vectors (Pearson on average ranks).

    Returns
    -------
    (float, bool)
        The correlation (0 when undefined) and whether it was undefined (a constant vector).
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 1)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 1)
    if a.shape != b.shape:
        raise _input_error("b", f"a vector of length {a.shape[0]}", f"length {b.shape[0]}",
                           "pass two vectors of the same length")
    if a.shape[0] == 0:
        return 0.0, True
    r, undefined = pearson_columns(average_ranks(a), average_ranks(b))
    return float(r[0]), bool(undefined[0])


def gene_metrics(truth, pred) -> pd.DataFrame:
    """Per-gene accuracy of a prediction (docs/benchmark.md), computed over cells.

    Parameters
    ----------
    truth
        Measured expression, cells x genes: numpy array, scipy sparse matrix, DataFrame or
        AnnData (``.X``). Not modified.
    pred
        Predicted expression of the same cells and genes, in the same order (same forms
        accepted). Where both carry gene/cell names they must be equal.

    Returns
    -------
    pandas.DataFrame
        One row per gene (index = gene names when an input carries them, else ``0..g-1``)
        with columns

        - ``spcc``: Spearman correlation (Pearson on average ranks);
        - ``pcc``: Pearson correlation;
        - ``ssim``: 1-D structural similarity of Li et al. on min-max scaled vectors, with
          global means, population (co)variances, ``C1 = 0.01**2``, ``C2 = 0.03**2``;
        - ``rmse``: RMSE of the z-scored (population std) vectors;
        - ``js``: Jensen-Shannon divergence (natural log, not its square root) between
          ``x / sum(x)`` and ``y / sum(y)``;
        - ``css_gene``: cosine similarity; ``mse_gene``: mean squared error;
        - ``spcc_undefined``, ``pcc_undefined``, ``css_gene_undefined``: whether the value
          was undefined (constant or all-zero vector) and reported as 0.

        ``attrs["n_undefined"]`` holds the number of undefined values per metric.

    Raises
    ------
    ValueError
        (:class:`~spatialimpute._validation.SpatialImputeInputError`) on shape or name
        mismatch, non-2-D input or non-finite values.

    Notes
    -----
    Degenerate vectors follow the conventions in this module's docstring: a constant vector
    min-max scales and z-scores to the all-zero vector, an all-zero (after clipping negatives)
    vector is the uniform distribution for ``js``.
    """
    t, p, _, cols = _pair(truth, pred)
    n_cells, n_genes = t.shape
    out = {name: np.empty(n_genes) for name in GENE_METRICS}
    flags = {name: np.zeros(n_genes, dtype=bool) for name in ("spcc", "pcc", "css_gene")}
    for block in _blocks(n_cells, n_genes):
        x, y = t[:, block], p[:, block]
        out["pcc"][block], flags["pcc"][block] = pearson_columns(x, y)
        out["spcc"][block], flags["spcc"][block] = pearson_columns(average_ranks(x), average_ranks(y))
        out["ssim"][block] = _ssim_columns(x, y)
        diff = _zscore_columns(x) - _zscore_columns(y)
        out["rmse"][block] = np.sqrt(np.mean(diff * diff, axis=0))
        out["js"][block] = _js_columns(x, y)
        out["css_gene"][block], flags["css_gene"][block] = _cosine(x, y, axis=0)
        d = x - y
        out["mse_gene"][block] = np.mean(d * d, axis=0)
    index = cols if cols is not None else pd.RangeIndex(n_genes)
    df = pd.DataFrame(out, index=index, columns=list(GENE_METRICS))
    for name, flag in flags.items():
        df[f"{name}_undefined"] = flag
    df.index.name = "gene"
    df.attrs["n_undefined"] = {name: int(flag.sum()) for name, flag in flags.items()}
    return df


def cell_metrics(truth, pred) -> pd.DataFrame:
    """Per-cell accuracy of a prediction (docs/benchmark.md), computed over genes.

    Parameters
    ----------
    truth, pred
        Cells x genes matrices of the same shape, as in :func:`gene_metrics`.

    Returns
    -------
    pandas.DataFrame
        One row per cell (index = cell names when an input carries them, else ``0..n-1``)
        with ``css_cell`` (cosine similarity; 0 when either row is all-zero),
        ``mse_cell`` (mean squared error over genes) and ``css_cell_undefined``.
        ``attrs["n_undefined"]`` = ``{"css_cell": count}``.
    """
    t, p, rows, _ = _pair(truth, pred)
    n_cells, n_genes = t.shape
    css = np.empty(n_cells)
    mse = np.empty(n_cells)
    undefined = np.zeros(n_cells, dtype=bool)
    for block in _blocks(n_genes, n_cells):
        x, y = t[block], p[block]
        css[block], undefined[block] = _cosine(x, y, axis=1)
        d = x - y
        mse[block] = np.mean(d * d, axis=1)
    index = rows if rows is not None else pd.RangeIndex(n_cells)
    df = pd.DataFrame({"css_cell": css, "mse_cell": mse, "css_cell_undefined": undefined}, index=index)
    df.index.name = "cell"
    df.attrs["n_undefined"] = {"css_cell": int(undefined.sum())}
    return df
