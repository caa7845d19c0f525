"""Leiden clustering of a cells x features matrix (PCA + kNN graph + leidenalg)."""

from __future__ import annotations

import numpy as np


def pca(X: np.ndarray, n_comps: int, seed: int = 0) -> np.ndarray:
    """Principal components of ``X`` (centred), via randomized SVD for speed."""
    from sklearn.decomposition import PCA

    n_comps = max(1, min(n_comps, X.shape[0] - 1, X.shape[1]))
    solver = "randomized" if min(X.shape) > 3 * n_comps else "full"
    return PCA(n_components=n_comps, svd_solver=solver, random_state=seed).fit_transform(np.asarray(X, dtype=np.float32))


def knn_graph_connectivities(X: np.ndarray, n_neighbors: int = 15):
    """Symmetric, weighted kNN graph (Euclidean) as a scipy CSR matrix.

    Edge weights follow a Gaussian kernel on the distance scaled by each cell's distance to
    its farthest neighbour; the graph is symmetrised by the fuzzy union ``a + b - ab``.
    """
    import scipy.sparse as sp
    from sklearn.neighbors import NearestNeighbors

    n = X.shape[0]
    k = min(n_neighbors, n - 1)
    dist, idx = NearestNeighbors(n_neighbors=k + 1).fit(X).kneighbors(X)
    dist, idx = dist[:, 1:], idx[:, 1:]
    sigma = np.maximum(dist[:, -1:], 1e-12)
    weights = np.exp(-((dist / sigma) ** 2))
    rows = np.repeat(np.arange(n), k)
    directed = sp.csr_matrix((weights.ravel(), (rows, idx.ravel())), shape=(n, n))
    product = directed.multiply(directed.T)
    return (directed + directed.T - product).tocsr()


def leiden(X, *, resolution: float = 1.0, n_neighbors: int = 15, n_pcs: int = 50, seed: int = 0,
           max_genes_without_pca: int = 50) -> np.ndarray:
    """Leiden clusters of the rows of ``X``.

    The graph is built on ``X`` itself when it has at most ``max_genes_without_pca`` columns,
    otherwise on its first ``n_pcs`` principal components.

    Parameters
    ----------
    X
        Cells x features (dense or sparse), e.g. log-normalised expression.
    resolution
        Leiden resolution (RB configuration model).
    n_neighbors
        Neighbours per cell in the kNN graph.
    n_pcs
        Principal components used when ``X`` is wide.
    seed
        Seed for PCA and Leiden.

    Returns
    -------
    numpy.ndarray
        int64 cluster label per row, clusters numbered by decreasing size.
    """
    import igraph as ig
    import leidenalg
    import scipy.sparse as sp

    X = X.toarray() if sp.issparse(X) else np.asarray(X, dtype=np.float32)
    if X.shape[0] < 3:
        return np.zeros(X.shape[0], dtype=np.int64)
    basis = X if X.shape[1] <= max_genes_without_pca else pca(X, n_pcs, seed)
    graph = sp.triu(knn_graph_connectivities(basis, n_neighbors), k=1).tocoo()
    g = ig.Graph(n=X.shape[0], edges=list(zip(graph.row.tolist(), graph.col.tolist())), directed=False)
    g.es["weight"] = graph.data.tolist()
    part = leidenalg.find_partition(
        g, leidenalg.RBConfigurationVertexPartition, weights="weight",
        resolution_parameter=resolution, seed=seed, n_iterations=-1,
    )
    labels = np.asarray(part.membership, dtype=np.int64)
    order = np.argsort(-np.bincount(labels), kind="stable")
    remap = np.empty_like(order)
    remap[order] = np.arange(order.size)
    return remap[labels]
