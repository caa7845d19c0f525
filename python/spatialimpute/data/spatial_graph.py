"""Cell graphs for STGNET stage 5: a spatial radius graph whose radius gives a target mean
degree, a cosine feature kNN graph, and row-normalised sparse propagation matrices.

All graphs are scipy CSR matrices (0/1, symmetric, no self loops); memory is O(edges).
Spatial graphs take ``sample_ids`` (one section code per cell): cells of different
sections are never neighbours, so the graph is block-diagonal over sections even where
their coordinates overlap.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
from scipy.spatial import cKDTree

from .neighbors import index_dtype, spatial_knn


def _check_coords(coords: np.ndarray) -> np.ndarray:
    coords = np.asarray(coords, dtype=np.float64)
    if coords.ndim != 2 or coords.shape[0] < 2 or not np.isfinite(coords).all():
        raise ValueError(
            "coords: expected a finite (n_cells >= 2, n_dims) array; "
            f"found shape {coords.shape}{'' if np.isfinite(coords).all() else ' with NaN/Inf'}"
        )
    return coords


def sections(n_cells: int, sample_ids=None) -> list[np.ndarray]:
    """Indices of the cells of each section (one section of all cells when ``sample_ids`` is None)."""
    if sample_ids is None:
        return [np.arange(n_cells)]
    ids = np.asarray(sample_ids)
    if ids.shape != (n_cells,):
        raise ValueError(f"sample_ids: expected one section per cell ({n_cells},); found shape {ids.shape}")
    _, codes = np.unique(ids, return_inverse=True)
    order = np.argsort(codes, kind="stable")
    return np.split(order, np.flatnonzero(np.diff(codes[order])) + 1)


def radius_for_mean_degree(coords: np.ndarray, target_degree: float = 4.0, sample_ids=None) -> float:
    """Radius ``r`` such that connecting cells closer than ``r`` gives mean degree ~ target.

    The mean degree at radius ``r`` is ``#{ordered pairs i != j of one section : d_ij < r} / N``.
    It is read off the sorted k-nearest-neighbour distances within each section (exact while
    no cell has more than ``k`` neighbours inside ``r``; ``k`` grows until that holds). With
    ``v`` the ``m``-th smallest ordered-pair distance (``m = round(target * N)``), ``r``
    either excludes the pairs tied at ``v`` (``r = v``) or includes them (``r`` halfway to
    the next larger distance), whichever mean degree is closer to the target (ties matter
    on regular grids).

    Parameters
    ----------
    coords
        Cell coordinates ``(N, d)`` in raw units.
    target_degree
        Wanted mean number of neighbours (paper: about 4).
    sample_ids
        Section of each cell (``None``: one section); only pairs within a section count.

    Returns
    -------
    float
        The radius.
    """
    coords = _check_coords(coords)
    n = coords.shape[0]
    groups = [g for g in sections(n, sample_ids) if g.size > 1]
    n_pairs_max = sum(g.size * (g.size - 1) for g in groups)
    if not (0 < target_degree < n_pairs_max / n):
        raise ValueError(f"target_degree: expected a value in (0, {n_pairs_max / n:g}) (ordered pairs of cells of "
                         f"one section per cell); found {target_degree}")
    trees = [cKDTree(coords[g]) for g in groups]
    m = max(1, int(round(target_degree * n)))
    k = int(max(16, math.ceil(4 * target_degree)))
    while True:
        dists = [tree.query(coords[g], k=min(k, g.size - 1) + 1)[0][:, 1:] for tree, g in zip(trees, groups)]
        d = np.sort(np.concatenate([x.ravel() for x in dists]))
        v = d[m - 1]
        n_lt = int(np.searchsorted(d, v, side="left"))
        n_le = int(np.searchsorted(d, v, side="right"))
        if n_lt > 0 and abs(n_lt / n - target_degree) <= abs(n_le / n - target_degree):
            r = float(v)  # ties at v: excluding them gets closer to the target
        else:
            nxt = d[n_le] if n_le < d.size else v * 1.0001 + 1e-12
            r = float(0.5 * (v + nxt)) if nxt > v else float(np.nextafter(v, np.inf))
        # exact when, in every section, all neighbours are listed or the k-th lies at or beyond r
        if all(x.shape[1] == g.size - 1 or (x[:, -1] >= r).all() for x, g in zip(dists, groups)):
            return r
        k *= 2


def radius_graph(coords: np.ndarray, radius: float, sample_ids=None) -> sp.csr_matrix:
    """Symmetric 0/1 graph connecting cells of one section with Euclidean distance ``< radius``
    (no self loops; ``sample_ids=None``: one section)."""
    coords = _check_coords(coords)
    if not (radius > 0 and np.isfinite(radius)):
        raise ValueError(f"radius: expected a positive finite number; found {radius}")
    n = coords.shape[0]
    rows, cols = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)]
    for g in sections(n, sample_ids):
        pairs = cKDTree(coords[g]).query_pairs(r=radius, output_type="ndarray")
        if not pairs.size:
            continue
        pairs = g[pairs]
        d = np.linalg.norm(coords[pairs[:, 0]] - coords[pairs[:, 1]], axis=1)
        pairs = pairs[d < radius]  # query_pairs uses <=; the rule is strict
        rows += [pairs[:, 0], pairs[:, 1]]
        cols += [pairs[:, 1], pairs[:, 0]]
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    g = sp.csr_matrix((np.ones(rows.size, dtype=np.float32), (rows, cols)), shape=(n, n))
    g.sum_duplicates()
    g.data[:] = 1.0
    return g


def spatial_radius_graph(coords: np.ndarray, target_degree: float = 4.0,
                         sample_ids=None) -> tuple[sp.csr_matrix, float]:
    """Radius graph with the radius chosen by :func:`radius_for_mean_degree`.

    Returns
    -------
    graph, radius
    """
    r = radius_for_mean_degree(coords, target_degree, sample_ids)
    return radius_graph(coords, r, sample_ids), r


def section_knn(coords: np.ndarray, k: int, sample_ids=None) -> np.ndarray:
    """The ``k`` nearest other cells of each cell within its own section (nearest first).

    Integer type of :func:`~spatialimpute.data.neighbors.index_dtype` (int32 below 2**31
    cells). ``k`` is capped at the smallest section's size minus one so that every row has
    the same length; a cell alone in its section lists itself.
    """
    coords = np.asarray(coords, dtype=np.float64)
    groups = sections(coords.shape[0], sample_ids)
    k_eff = max(1, min(int(k), max(g.size for g in groups) - 1, *(g.size - 1 for g in groups if g.size > 1)))
    if len(groups) == 1 and groups[0].size > 1:  # one section: its cells in order
        return spatial_knn(coords, k_eff)
    dtype = index_dtype(coords.shape[0])
    out = np.repeat(np.arange(coords.shape[0], dtype=dtype)[:, None], k_eff, axis=1)
    for g in groups:
        if g.size > 1:
            out[g] = g.astype(dtype)[spatial_knn(coords[g], k_eff)]
    return out


def cosine_knn_indices(X: np.ndarray, k: int, *, device=None, max_block_entries: int = 1 << 24) -> np.ndarray:
    """Indices of the ``k`` most cosine-similar other rows of ``X`` (self excluded).

    Computed in row blocks (at most ``max_block_entries`` similarities held at once) with
    torch, on ``device`` when given. All-zero rows have cosine 0 to every row.
    """
    import torch

    X = np.asarray(X, dtype=np.float32)
    n = X.shape[0]
    if not (1 <= k < n):
        raise ValueError(f"k: expected 1 <= k < n_cells = {n}; found {k}")
    dev = torch.device("cpu") if device is None else torch.device(device)
    t = torch.from_numpy(X).to(dev)
    t = t / t.norm(dim=1, keepdim=True).clamp_min(1e-12)
    block = max(1, min(n, max_block_entries // n))
    out = torch.empty((n, k), dtype=torch.int64, device=dev)
    for start in range(0, n, block):
        stop = min(n, start + block)
        sim = t[start:stop] @ t.T
        sim[torch.arange(stop - start, device=dev), torch.arange(start, stop, device=dev)] = -float("inf")
        out[start:stop] = sim.topk(k, dim=1).indices
    return out.cpu().numpy()


def feature_knn_graph(X: np.ndarray, k: int = 5, *, device=None) -> sp.csr_matrix:
    """Cosine kNN graph on the rows of ``X``, symmetrised by element-wise max (0/1, no self
    loops). Paper: ``k = 5``."""
    idx = cosine_knn_indices(X, k, device=device)
    n = idx.shape[0]
    rows = np.repeat(np.arange(n), k)
    g = sp.csr_matrix((np.ones(n * k, dtype=np.float32), (rows, idx.ravel())), shape=(n, n))
    g = g.maximum(g.T).tocsr()
    g.data[:] = 1.0
    return g


def row_normalized_propagation(graph: sp.spmatrix, *, device=None, dtype=None):
    """Sparse torch tensor ``D^-1 (A + I)`` (row normalisation, as in the original code).

    Parameters
    ----------
    graph
        Square 0/1 adjacency (scipy sparse), no self loops needed.
    device, dtype
        Torch placement (default CPU, float32).

    Returns
    -------
    torch.Tensor
        Sparse COO tensor (N x N), coalesced.
    """
    import torch

    a = sp.csr_matrix(graph, dtype=np.float64)
    if a.shape[0] != a.shape[1]:
        raise ValueError(f"graph: expected a square matrix; found shape {a.shape}")
    a = a + sp.eye(a.shape[0], dtype=np.float64, format="csr")
    deg = np.asarray(a.sum(axis=1)).ravel()
    a = sp.diags(1.0 / deg) @ a
    coo = a.tocoo()
    idx = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
    val = torch.from_numpy(coo.data.astype(np.float32))
    t = torch.sparse_coo_tensor(idx, val, a.shape, dtype=dtype or torch.float32, check_invariants=False).coalesce()
    return t.to(device) if device is not None else t
