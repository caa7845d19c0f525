"""An order of the cells in which runs of consecutive cells are compact patches of tissue.

Output blocks (:meth:`~spatialimpute.model._base.BaseImputer.impute` with ``block_size``
or ``out=``) are runs of consecutive cells; a method that reads spatial neighbours
(``method="auto"``'s smoothing and intervals) then needs, per block, only the neighbours
across its patch's border instead of the whole tissue.
"""

from __future__ import annotations

import numpy as np

from .._validation import SpatialImputeInputError
from .spatial_graph import sections

__all__ = ["spatial_order"]

#: Bits per axis of the grid the coordinates are snapped to before interleaving.
_BITS = 16


def spatial_order(coords: np.ndarray, sample_ids=None) -> np.ndarray:
    """Cell indices sorted by section, then along a Z-order (Morton) curve of their coordinates.

    Within a section the coordinates are snapped to a grid of square cells (``2**16`` along
    the section's longest axis, the same physical size on every axis) and the bits of the
    axes are interleaved, so cells close in the order are close in the tissue: every aligned
    square of ``4**j`` grid cells (cube of ``8**j`` in 3D) is one run of the order, on a long
    strip of tissue as on a square one.

    Parameters
    ----------
    coords
        ``(n_cells, 2 or 3)`` coordinates, finite.
    sample_ids
        Section of each cell (sections keep the order of their first appearance), or
        ``None`` for one section.

    Returns
    -------
    numpy.ndarray
        int64 permutation: ``adata[spatial_order(adata.obsm["spatial"])]`` sorts the cells.

    Examples
    --------
    >>> order = spatial_order(spatial.obsm["spatial"], spatial.obs["section"])  # doctest: +SKIP
    >>> spatial = spatial[order].copy()  # doctest: +SKIP
    """
    coords = np.asarray(coords, dtype=np.float64)
    if coords.ndim != 2 or coords.shape[1] not in (2, 3) or not np.isfinite(coords).all():
        raise SpatialImputeInputError("coords", "a finite (n_cells, 2 or 3) array of coordinates",
                                      f"shape {coords.shape}" + ("" if np.isfinite(coords).all() else " with NaN/Inf"),
                                      "pass adata.obsm['spatial'] (x, y or x, y, z per cell)")
    if sample_ids is not None and np.shape(sample_ids) != (coords.shape[0],):
        raise SpatialImputeInputError("sample_ids", f"one section per cell ({coords.shape[0]},)",
                                      f"shape {np.shape(sample_ids)}", "pass adata.obs[sample_key] or None")
    groups = sections(coords.shape[0], None if sample_ids is None else _first_seen_codes(sample_ids))
    return np.concatenate([cells[np.argsort(_morton(coords[cells]), kind="stable")] for cells in groups]
                          ) if coords.shape[0] else np.zeros(0, dtype=np.int64)


def _first_seen_codes(sample_ids) -> np.ndarray:
    """Section codes numbered in the order the sections first appear."""
    _, first, codes = np.unique(np.asarray(sample_ids), return_index=True, return_inverse=True)
    rank = np.empty(first.size, dtype=np.int64)
    rank[np.argsort(first)] = np.arange(first.size)
    return rank[codes.ravel()]


def _morton(coords: np.ndarray) -> np.ndarray:
    """Z-order keys (uint64) of coordinates snapped to a grid of square cells, ``2**_BITS``
    along the longest axis (one scale for every axis, so runs are squares, not strips)."""
    low, span = coords.min(axis=0), float(np.ptp(coords, axis=0).max(initial=0.0))
    grid = ((coords - low) / (span if span > 0 else 1.0) * (2**_BITS - 1)).astype(np.uint64)
    dims = coords.shape[1]
    key = np.zeros(coords.shape[0], dtype=np.uint64)
    for bit in range(_BITS):
        for axis in range(dims):
            key |= ((grid[:, axis] >> np.uint64(bit)) & np.uint64(1)) << np.uint64(bit * dims + axis)
    return key
