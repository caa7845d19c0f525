"""Chunked exact nearest-neighbour search and neighbour means with torch (CPU or GPU), bounded memory."""

from __future__ import annotations

import numpy as np
import torch

#: Target number of float32 entries in one block (query chunk x reference similarities, or
#: cells x genes of a neighbour mean).
_BLOCK_ENTRIES = 2**24


def _as_tensor(x, device: torch.device) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.to(device=device, dtype=torch.float32)
    return torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32, device=device)


def _chunk_rows(n_reference: int, chunk_size: int | None) -> int:
    if chunk_size is not None:
        return max(1, int(chunk_size))
    return max(1, _BLOCK_ENTRIES // max(n_reference, 1))


def knn_cosine(query, reference, k: int, *, device: torch.device | str = "cpu", chunk_size: int | None = None,
               exclude_self: bool = False):
    """Exact cosine k-nearest neighbours of each query row among the reference rows.

    Rows are L2-normalised; similarities are computed block by block (queries in chunks), so
    memory stays ``O(chunk x n_reference)``. All-zero rows have similarity 0 to everything.

    Parameters
    ----------
    query, reference
        Arrays or tensors, (n_query, d) and (n_reference, d).
    k
        Neighbours per query (capped at the number of reference rows).
    device
        Where to compute.
    chunk_size
        Query rows per block (default: about 16M similarities per block).
    exclude_self
        Query and reference are the same rows; drop each row from its own neighbours.

    Returns
    -------
    indices : torch.Tensor
        int64 (n_query, k) reference indices, nearest first, on ``device``.
    distances : torch.Tensor
        float32 (n_query, k) cosine distances ``1 - cos``, increasing, on ``device``.
    """
    device = torch.device(device)
    q = torch.nn.functional.normalize(_as_tensor(query, device), dim=1)
    r = torch.nn.functional.normalize(_as_tensor(reference, device), dim=1)
    k_eff = min(int(k) + int(exclude_self), r.shape[0])
    step = _chunk_rows(r.shape[0], chunk_size)
    out_idx, out_dist = [], []
    for start in range(0, q.shape[0], step):
        sim = q[start : start + step] @ r.T
        if exclude_self:
            rows = torch.arange(sim.shape[0], device=device)
            sim[rows, rows + start] = -float("inf")
        top, idx = torch.topk(sim, k_eff, dim=1, largest=True, sorted=True)
        if exclude_self:
            top, idx = top[:, : k_eff - 1], idx[:, : k_eff - 1]
        out_idx.append(idx)
        out_dist.append(1.0 - top)
    return torch.cat(out_idx), torch.cat(out_dist)


def spatial_knn(coords: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact Euclidean k-nearest neighbours of each cell among the other cells (KD-tree).

    Parameters
    ----------
    coords
        (n_cells, 2 or 3) coordinates.
    k
        Neighbours per cell (capped at ``n_cells - 1``).

    Returns
    -------
    indices : numpy.ndarray
        int64 (n_cells, k), nearest first, excluding the cell itself.
    distances : numpy.ndarray
        float64 (n_cells, k).
    """
    from scipy.spatial import cKDTree

    k_eff = min(int(k), coords.shape[0] - 1)
    if k_eff < 1:
        return np.zeros((coords.shape[0], 0), dtype=np.int64), np.zeros((coords.shape[0], 0))
    dist, idx = cKDTree(coords).query(coords, k=k_eff + 1)
    # Duplicate coordinates can put the cell itself anywhere among ties: drop it explicitly.
    own = idx == np.arange(coords.shape[0])[:, None]
    drop_last = ~own.any(axis=1)
    own[drop_last, -1] = True
    keep = ~own
    return idx[keep].reshape(-1, k_eff).astype(np.int64), dist[keep].reshape(-1, k_eff)


def weighted_neighbor_mean(indices: torch.Tensor, weights: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``out[c] = sum_j weights[c, j] * values[indices[c, j]]`` in blocks, via sparse products.

    Never materialises the (cells x k x genes) neighbour table.
    """
    n, k = indices.shape
    n_ref, n_genes = values.shape
    step = max(1, _BLOCK_ENTRIES // max(n_genes, k))
    out = torch.empty((n, n_genes), dtype=values.dtype, device=values.device)
    for start in range(0, n, step):
        idx, w = indices[start : start + step], weights[start : start + step]
        rows = torch.arange(idx.shape[0], device=idx.device).repeat_interleave(k)
        block = torch.sparse_coo_tensor(torch.stack([rows, idx.reshape(-1)]), w.reshape(-1), (idx.shape[0], n_ref),
                                        check_invariants=False)
        out[start : start + step] = torch.sparse.mm(block, values)
    return out
