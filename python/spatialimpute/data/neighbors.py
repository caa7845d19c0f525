"""Nearest neighbours between spatial and reference cells: chunked exact cosine search and
neighbour means with torch (CPU or GPU, bounded memory), and the joint panel-gene embedding
in which the kNN baseline, stImpute and the reliability model look for neighbours."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import torch

from .normalize import gene_scales, standardize_genes

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
    k_out = k_eff - int(exclude_self)
    # filled in place: concatenating per-chunk tables would hold them twice at the end
    out_idx = torch.empty((q.shape[0], k_out), dtype=torch.int64, device=device)
    out_dist = torch.empty((q.shape[0], k_out), dtype=torch.float32, device=device)
    for start in range(0, q.shape[0], step):
        sim = q[start : start + step] @ r.T
        if exclude_self:
            rows = torch.arange(sim.shape[0], device=device)
            sim[rows, rows + start] = -float("inf")
        top, idx = torch.topk(sim, k_eff, dim=1, largest=True, sorted=True)
        out_idx[start : start + step] = idx[:, :k_out]
        out_dist[start : start + step] = 1.0 - top[:, :k_out]
    return out_idx, out_dist


#: Cells per KD-tree query of :func:`spatial_knn` (bounds its working memory, not its result).
_SPATIAL_QUERY_ROWS = 65_536


def index_dtype(n: int) -> type:
    """The smallest integer type (int32 or int64) that indexes ``n`` rows."""
    return np.int32 if n < 2**31 else np.int64


def spatial_knn(coords: np.ndarray, k: int) -> np.ndarray:
    """Exact Euclidean k-nearest neighbours of each cell among the other cells (KD-tree).

    The tree is queried in chunks of cells, so the working memory beyond the result is a
    chunk's.

    Parameters
    ----------
    coords
        (n_cells, 2 or 3) coordinates.
    k
        Neighbours per cell (capped at ``n_cells - 1``).

    Returns
    -------
    numpy.ndarray
        Indices (n_cells, k), int32 below 2**31 cells (:func:`index_dtype`), nearest first,
        excluding the cell itself.
    """
    from scipy.spatial import cKDTree

    n = coords.shape[0]
    k_eff = min(int(k), n - 1)
    indices = np.empty((n, max(k_eff, 0)), dtype=index_dtype(n))
    if k_eff < 1:
        return indices
    tree = cKDTree(coords)
    for start in range(0, n, _SPATIAL_QUERY_ROWS):
        stop = min(n, start + _SPATIAL_QUERY_ROWS)
        idx = tree.query(coords[start:stop], k=k_eff + 1)[1]
        # Duplicate coordinates can put the cell itself anywhere among ties: drop it explicitly.
        own = idx == np.arange(start, stop)[:, None]
        own[~own.any(axis=1), -1] = True
        keep = ~own
        indices[start:stop] = idx[keep].reshape(-1, k_eff)
    return indices


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


def neighbor_mean(values: np.ndarray, neighbors: np.ndarray) -> np.ndarray:
    """``values[neighbors].mean(axis=1)`` (``neighbors``: rows x k indices into ``values``'
    rows) without the (rows x k x genes) table: memory is the output's."""
    values = np.ascontiguousarray(values, dtype=np.float64 if values.dtype == np.float64 else np.float32)
    indices = torch.as_tensor(np.asarray(neighbors, dtype=np.int64))
    with warnings.catch_warnings():  # a read-only array: only read here
        warnings.simplefilter("ignore", UserWarning)
        table = torch.from_numpy(values)
    weights = torch.full(indices.shape, 1.0 / indices.shape[1], dtype=table.dtype)
    return weighted_neighbor_mean(indices, weights, table).numpy()


#: The joint PCA is fitted on at most this many stacked cells (a random subset above it);
#: cells are then projected in blocks of this many rows.
_PCA_MAX_ROWS = 200_000


@dataclasses.dataclass(frozen=True)
class JointEmbedding:
    """A fitted joint embedding of spatial and reference cells from their shared genes.

    Each gene is z-scored within each dataset (removing per-gene shifts and scale
    differences between technologies); when there are more genes than the embedding's size
    the z-scores are projected on the principal components of the stacked cells. Fitted
    once (:meth:`fit`), it embeds any rows of either dataset (:meth:`spatial`,
    :meth:`reference`), so cells can be embedded block by block.

    Attributes
    ----------
    spatial_scales, reference_scales
        Per-gene mean and inverse standard deviation of each dataset (:func:`gene_scales`).
    pca_mean, components
        Mean and principal axes (components x genes) of the stacked z-scores, float32, or
        ``None`` when the genes are used as they are.
    """

    spatial_scales: tuple[np.ndarray, np.ndarray]
    reference_scales: tuple[np.ndarray, np.ndarray]
    pca_mean: np.ndarray | None = None
    components: np.ndarray | None = None

    @classmethod
    def fit(cls, spatial: np.ndarray, reference: np.ndarray, n_components: int, seed: int) -> "JointEmbedding":
        """Fit on all spatial and reference rows (the PCA on at most :data:`_PCA_MAX_ROWS` of them)."""
        scales_a, scales_b = gene_scales(spatial), gene_scales(reference)
        if spatial.shape[1] <= n_components:
            return cls(scales_a, scales_b)
        from sklearn.decomposition import PCA

        n_a, n_total = spatial.shape[0], spatial.shape[0] + reference.shape[0]
        rows = np.arange(n_total)
        if n_total > _PCA_MAX_ROWS:
            rows = np.sort(np.random.default_rng(seed).choice(n_total, _PCA_MAX_ROWS, replace=False))
        pca = PCA(n_components=n_components, svd_solver="randomized", random_state=seed)
        pca.fit(np.vstack([standardize_genes(spatial[rows[rows < n_a]], scales_a),
                           standardize_genes(reference[rows[rows >= n_a] - n_a], scales_b)]))
        return cls(scales_a, scales_b, pca.mean_.astype(np.float32), pca.components_.astype(np.float32))

    @property
    def dim(self) -> int:
        """Size of the embedding."""
        return self.spatial_scales[0].size if self.components is None else self.components.shape[0]

    def spatial(self, X: np.ndarray) -> np.ndarray:
        """Embed rows of the spatial dataset (float32, one row per row of ``X``)."""
        return self._embed(X, self.spatial_scales)

    def reference(self, X: np.ndarray) -> np.ndarray:
        """Embed rows of the reference dataset (float32, one row per row of ``X``)."""
        return self._embed(X, self.reference_scales)

    def _embed(self, X: np.ndarray, scales: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        if self.components is None:
            return standardize_genes(X, scales)
        out = np.empty((X.shape[0], self.dim), dtype=np.float32)
        offset = self.pca_mean @ self.components.T  # centred after the product, as scikit-learn's transform
        for start in range(0, X.shape[0], _PCA_MAX_ROWS):
            part = standardize_genes(X[start:start + _PCA_MAX_ROWS], scales) @ self.components.T
            part -= offset
            out[start:start + _PCA_MAX_ROWS] = part
        return out

    def state(self) -> dict[str, np.ndarray]:
        """The fitted arrays, by name (for a saved model)."""
        state = {"spatial_mean": self.spatial_scales[0], "spatial_inv_sd": self.spatial_scales[1],
                 "reference_mean": self.reference_scales[0], "reference_inv_sd": self.reference_scales[1]}
        if self.components is not None:
            state.update(pca_mean=self.pca_mean, components=self.components)
        return state

    @classmethod
    def from_state(cls, state: dict, n_genes: int) -> "JointEmbedding":
        """Rebuild from :meth:`state`; refuses arrays that do not fit ``n_genes`` genes."""
        arrays = {k: np.asarray(v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in state.items()}
        scales = [arrays[k].astype(np.float64) for k in ("spatial_mean", "spatial_inv_sd", "reference_mean",
                                                          "reference_inv_sd")]
        components = arrays.get("components")
        pca_mean = arrays.get("pca_mean")
        if (any(s.shape != (n_genes,) for s in scales) or (components is None) != (pca_mean is None)
                or components is not None and (components.ndim != 2 or components.shape[1] != n_genes
                                               or pca_mean.shape != (n_genes,))):
            raise ValueError(f"embedding arrays do not fit {n_genes} genes")
        if components is not None:
            components, pca_mean = components.astype(np.float32), pca_mean.astype(np.float32)
        return cls((scales[0], scales[1]), (scales[2], scales[3]), pca_mean, components)


@dataclasses.dataclass(frozen=True)
class JointNeighbors:
    """Cosine neighbours of spatial cells among the reference cells, in a fitted :class:`JointEmbedding`.

    Holds the embedding and the embedded reference (cells x components), nothing per spatial
    cell: any rows of the spatial data can be searched, block by block.
    """

    embedding: JointEmbedding
    reference: np.ndarray

    @classmethod
    def fit(cls, spatial: np.ndarray, reference: np.ndarray, n_components: int, seed: int) -> "JointNeighbors":
        """Fit the embedding on the spatial and reference rows (shared genes) and embed the reference."""
        embedding = JointEmbedding.fit(spatial, reference, n_components, seed)
        return cls(embedding, embedding.reference(reference))

    @classmethod
    def from_state(cls, state: dict, reference: np.ndarray) -> "JointNeighbors":
        """Rebuild from :meth:`JointEmbedding.state` and the reference rows it was fitted with."""
        embedding = JointEmbedding.from_state(state, reference.shape[1])
        return cls(embedding, embedding.reference(reference))

    def search(self, spatial: np.ndarray, k: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """:func:`knn_cosine` of the spatial rows ``spatial`` (same genes as the fit) among the reference."""
        return knn_cosine(self.embedding.spatial(spatial), self.reference, k, device=device)


def neighbor_weights(distances: torch.Tensor, weighting: str) -> torch.Tensor:
    """Row-normalised neighbour weights from cosine distances (nearest first)."""
    if weighting == "uniform":
        w = torch.ones_like(distances)
    else:
        w = (1.0 - distances).clamp_min(0.0)
        empty = w.sum(dim=1) == 0
        w[empty] = 1.0
    return w / w.sum(dim=1, keepdim=True)


def knn_average(paired, neighbors, columns: np.ndarray, weighting: str, device) -> np.ndarray:
    """Weighted mean of the reference expression ``columns`` over each cell's neighbours."""
    indices, distances = neighbors
    values = torch.as_tensor(_rows_cols(paired.reference_X, None, columns), device=device)
    return weighted_neighbor_mean(indices, neighbor_weights(distances, weighting), values).cpu().numpy()


def _rows_cols(X: np.ndarray, rows: np.ndarray | None, cols: np.ndarray) -> np.ndarray:
    """``X[rows][:, cols]``; a view, not a copy, when ``rows`` are all rows in order and
    ``cols`` a run of consecutive columns."""
    cols = np.asarray(cols)
    if cols.size and np.array_equal(cols, np.arange(cols[0], cols[0] + cols.size)):
        cols = slice(int(cols[0]), int(cols[0]) + cols.size)
    if rows is None or np.array_equal(rows, np.arange(X.shape[0])):
        return X[:, cols]
    return X[rows][:, cols] if isinstance(cols, slice) else X[np.ix_(rows, cols)]


def find_knn(paired, feature_cols: np.ndarray, cells: np.ndarray, *, k: int, n_components: int, seed: int, device):
    """Cosine neighbours of ``cells`` in the reference, embedded jointly from ``feature_cols``."""
    spatial = _rows_cols(paired.spatial_X, cells, feature_cols)
    joint = JointNeighbors.fit(spatial, _rows_cols(paired.reference_X, None, feature_cols), n_components, seed)
    return joint.search(spatial, k, device)


def knn_heldout_predictor(paired, *, k: int = 50, n_components: int = 30, weighting: str = "similarity",
                          seed: int = 0, device="cpu"):
    """``predict_heldout(train_cols, heldout_cols, cells)`` for :mod:`spatialimpute.reliability`.

    Predicts held-out panel genes with the kNN baseline built from the training panel genes
    only; a cheap, leakage-free stand-in when re-training a heavier method per gene fold is
    too costly.
    """

    def predict_heldout(train_cols, heldout_cols, cells):
        neighbors = find_knn(paired, train_cols, cells, k=k, n_components=n_components, seed=seed, device=device)
        return knn_average(paired, neighbors, heldout_cols, weighting, device)

    return predict_heldout
