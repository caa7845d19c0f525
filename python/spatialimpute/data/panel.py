"""The spatial panel as the methods read it: the caller's matrix, normalised row by row on read.

A dense log-normalised copy of the panel grows with cells x panel genes (1.2 GB for 300
genes over a million cells, 20 GB for a 5,000-gene panel); :class:`PanelMatrix` holds the
caller's matrix instead, never writes to it, and normalises only the rows a method asks
for, so a method that works block by block holds one block.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .normalize import CHUNK_ENTRIES, log1p_scaled

__all__ = ["PanelMatrix"]


class PanelMatrix:
    """Some rows and columns of a cells x genes matrix, read as dense float32 arrays.

    With ``scale`` the values are log-normalised on read (``log1p(counts * scale)`` per
    source row, as :func:`~spatialimpute.data.normalize.log_normalize`); without, they are
    the raw values. Indexing returns fresh arrays, never views of the source:
    ``panel[rows]``, ``panel[rows, cols]``, ``panel[np.ix_(rows, cols)]`` and
    ``np.asarray(panel)`` (every value; the one full-size copy). :meth:`take_cells` and
    :meth:`take_genes` give narrower views without reading anything.

    Parameters
    ----------
    matrix
        The source, dense or sparse (kept as it is when dense or CSR; other sparse formats
        are converted to CSR once). It must not change while the panel is in use.
    columns
        Source columns of the panel's genes, in order.
    scale
        Per source row, the factor before ``log1p`` (0 for cells without counts), or
        ``None`` for raw values.
    rows
        Source rows of the panel's cells, in order (default: every row).
    """

    dtype = np.dtype(np.float32)
    ndim = 2

    def __init__(self, matrix, columns: np.ndarray, scale: np.ndarray | None = None,
                 rows: np.ndarray | None = None) -> None:
        if sp.issparse(matrix) and matrix.format != "csr":
            matrix = sp.csr_matrix(matrix)
        elif not sp.issparse(matrix):
            matrix = np.asarray(matrix)
        self._matrix = matrix
        self._columns = np.asarray(columns, dtype=np.int64)
        self._scale = None if scale is None else np.asarray(scale, dtype=np.float64)
        self._rows = None if rows is None else np.asarray(rows, dtype=np.int64)

    @property
    def shape(self) -> tuple[int, int]:
        """(cells, genes)."""
        n = self._matrix.shape[0] if self._rows is None else self._rows.size
        return n, self._columns.size

    def __len__(self) -> int:
        return self.shape[0]

    # ------------------------------------------------------------------ views
    def take_cells(self, cells: np.ndarray) -> "PanelMatrix":
        """The cells at positions ``cells`` (in that order); nothing is read."""
        cells = self._positions(cells, self.shape[0])
        rows = cells if self._rows is None else self._rows[cells]
        return PanelMatrix(self._matrix, self._columns, self._scale, rows)

    def take_genes(self, genes: np.ndarray) -> "PanelMatrix":
        """The genes (columns) at positions ``genes`` (in that order); nothing is read."""
        genes = self._positions(genes, self.shape[1])
        return PanelMatrix(self._matrix, self._columns[genes], self._scale, self._rows)

    def log_normalized(self, scale: np.ndarray) -> "PanelMatrix":
        """The same cells and genes, log-normalised on read with the per-source-row ``scale``."""
        return PanelMatrix(self._matrix, self._columns, scale, self._rows)

    # ------------------------------------------------------------------ reading
    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, tuple):
            if len(key) != 2:
                raise IndexError(f"PanelMatrix takes (rows, columns), not {len(key)} indices")
            rows, cols = key
            if np.ndim(rows) == 2 and np.ndim(cols) == 2:  # np.ix_(rows, cols)
                rows, cols = np.ravel(rows), np.ravel(cols)
        else:
            rows, cols = key, slice(None)
        if np.ndim(rows) == 0 and not isinstance(rows, slice):
            return self._read(self._positions([rows], self.shape[0]), self._positions(cols, self.shape[1]))[0]
        return self._read(self._positions(rows, self.shape[0]), self._positions(cols, self.shape[1]))

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self._read(np.arange(self.shape[0]), np.arange(self.shape[1]))
        return out if dtype is None else out.astype(dtype, copy=False)

    def sums(self, axis: int) -> np.ndarray:
        """Float64 sums over cells (``axis=0``, one per gene) or genes (``axis=1``, one per cell),
        read in row chunks."""
        n, g = self.shape
        out = np.zeros(g if axis == 0 else n)
        step = max(1, CHUNK_ENTRIES // max(1, g))
        for start in range(0, n, step):
            part = self._read(np.arange(start, min(n, start + step)), np.arange(g))
            if axis == 0:
                out += part.sum(axis=0, dtype=np.float64)
            else:
                out[start:start + step] = part.sum(axis=1, dtype=np.float64)
        return out

    def _read(self, cells: np.ndarray, genes: np.ndarray) -> np.ndarray:
        """Dense float32 values of panel positions ``cells`` x ``genes``, in row chunks."""
        source_rows = cells if self._rows is None else self._rows[cells]
        source_cols = self._columns[genes]
        out = np.empty((cells.size, genes.size), dtype=np.float32)
        step = max(1, CHUNK_ENTRIES // max(1, genes.size))
        for start in range(0, cells.size, step):
            rows = source_rows[start:start + step]
            if sp.issparse(self._matrix):
                part = self._matrix[rows][:, source_cols].toarray()
            else:
                part = self._matrix[np.ix_(rows, source_cols)]
            out[start:start + step] = part if self._scale is None else log1p_scaled(part, self._scale[rows])
        return out

    @staticmethod
    def _positions(index, n: int) -> np.ndarray:
        """Integer positions (int64) for a slice, boolean mask or integer array over ``n`` items."""
        if isinstance(index, slice):
            return np.arange(n)[index]
        index = np.asarray(index)
        if index.dtype == bool:
            if index.shape != (n,):
                raise IndexError(f"boolean index of shape {index.shape} for {n} items")
            return np.flatnonzero(index)
        if index.size and not np.issubdtype(index.dtype, np.integer):
            raise IndexError(f"PanelMatrix indices must be integers, slices or boolean masks, not {index.dtype}")
        index = index.astype(np.int64, copy=False).ravel()
        if index.size and (index.min() < -n or index.max() >= n):
            raise IndexError(f"index out of range for {n} items")
        return np.where(index < 0, index + n, index)
