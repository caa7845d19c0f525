"""Mapping member: a soft mapping of spatial cells onto reference clusters (the idea of Tangram).

Each spatial cell gets mapping weights over clusters of reference cells (metacells from
k-means of the panel genes, split along the reference's labels when it has some), optimised
so that each mapped panel gene's pattern over the cells agrees with the measured one; the
target genes are the mapping applied to the clusters' mean log-normalised expression.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from .._validation import SpatialImputeInputError
from ..data.normalize import standardize_genes
from ..module.mapping import fit_mapping
from ..reliability import reliability_from_heldout
from ._base import BaseImputer
from ._config import Config, boolean, choice, integer, number

#: k-means and its PCA are fitted on at most this many reference cells, and on at most
#: ``_KMEANS_ROWS_PER_CLUSTER`` per cluster (per component for the PCA, when more; a random
#: subset above it); every reference cell is then projected and assigned to its nearest centre.
_KMEANS_MAX_ROWS = 50_000
_KMEANS_ROWS_PER_CLUSTER = 50
#: Spatial cells on which the reliability model refits the mapping per internal gene fold.
_RELIABILITY_CELLS = 2_000


@dataclasses.dataclass(frozen=True)
class MappingArchitecture(Config):
    """Options of :class:`MappingImpute`.

    ``n_clusters``: reference clusters the spatial cells are mapped onto (``None``: the
    square root of the number of reference cells, at most ``max_clusters``; a value at
    least the number of reference cells maps onto single reference cells);
    ``max_clusters``: the cap of that rule (bounds the cost on large references);
    ``clusters``: how the reference is clustered: ``"kmeans"`` (k-means of the panel
    genes), ``"labels"`` (k-means within each reference label, clusters shared out by label
    size; needs ``reference_labels_key``) or ``"auto"`` (labels when the reference has
    them); ``n_components``: PCA size of the panel genes for k-means; ``normalize``:
    ``"cluster"`` (Tangram's direction: each cluster spreads its share of the reference over
    the spatial cells, so cells receive different total weight, about 1 on average, which
    scales their imputed values) or ``"cell"`` (each spatial cell's weights sum to 1: its
    imputed values are a weighted mean of cluster profiles); ``reliability``: learn per-gene
    reliability scores (NaN otherwise).
    """

    n_clusters: int | None = integer(None, minimum=1, optional=True)
    max_clusters: int = integer(128, minimum=1)
    clusters: str = choice("auto", ("auto", "kmeans", "labels"))
    n_components: int = integer(30, minimum=1)
    normalize: str = choice("cluster", ("cluster", "cell"))
    reliability: bool = boolean(True)


@dataclasses.dataclass(frozen=True)
class MappingSchedule(Config):
    """How the mapping is optimised: ``steps`` Adam steps at learning rate ``lr`` for each
    batch of at most ``batch_size`` spatial cells (batches are mapped independently)."""

    steps: int = integer(50, minimum=1)
    lr: float = number(0.2, minimum=0.0, inclusive=False)
    batch_size: int = integer(10_000, minimum=2)


class MappingImpute(BaseImputer):
    """Soft mapping of spatial cells onto reference clusters (Tangram's idea, clusters mode).

    The reference cells are grouped into clusters (metacells) from their panel genes; each
    spatial cell gets a probability vector over the clusters (softmax of free logits),
    optimised with Adam so that each mapped panel gene's vector over the cells agrees with the
    measured one (cosine similarity, Tangram's default loss). Target genes are the
    mapping weights times the clusters' mean log-normalised reference expression. Cost grows
    with cells x clusters x panel genes; the number of clusters grows as the square root of
    the reference size up to ``max_clusters``. Reliability is learnt by refitting the whole
    procedure (clusters and mapping) on a subset of at most 2,000 cells with panel genes held
    out (:mod:`spatialimpute.reliability`).

    Parameters
    ----------
    spatial, reference, genes, seed, device, **kwargs
        See :class:`~spatialimpute.model._base.BaseImputer`.
    **options
        See :class:`MappingArchitecture` and :class:`MappingSchedule`.
    """

    method_name = "mapping"

    Architecture = MappingArchitecture
    Schedule = MappingSchedule

    def __init__(self, spatial, reference, genes=None, **kwargs):
        super().__init__(spatial, reference, genes, **kwargs)
        if self.architecture.clusters == "labels" and self.paired.reference_labels is None:
            raise SpatialImputeInputError(
                "clusters", "reference labels for clusters='labels'", "no reference_labels_key",
                "pass reference_labels_key='<obs column of the reference>' or use clusters='kmeans'",
            )

    # ------------------------------------------------------------------ helpers
    def _cluster_count(self) -> int:
        p, n_ref = self.architecture, self.paired.n_reference
        wanted = p.n_clusters if p.n_clusters is not None else min(p.max_clusters, math.ceil(math.sqrt(n_ref)))
        return max(1, min(wanted, n_ref))

    def _labels(self) -> np.ndarray | None:
        p = self.architecture
        if p.clusters == "kmeans" or self.paired.reference_labels is None:
            return None
        return np.asarray(self.paired.reference_labels.codes, dtype=np.int64)

    def _assign(self, feature_cols: np.ndarray) -> np.ndarray:
        """Cluster of each reference cell, from the panel genes ``feature_cols``."""
        return cluster_reference(self.paired.reference_X[:, feature_cols], self._cluster_count(), self._labels(),
                                 n_components=self.architecture.n_components, seed=self.seed)

    def _map(self, assignment: np.ndarray, feature_cols: np.ndarray, cells: np.ndarray) -> torch.Tensor:
        """Mapping weights of ``cells`` onto the clusters, fitted on ``feature_cols``."""
        p, s = self.architecture, self.schedule
        measured = self.paired.spatial_X[np.ix_(cells, feature_cols)]
        reference = self.paired.reference_X[:, feature_cols]
        profiles = cluster_means(assignment, reference)
        shares = None
        if p.normalize == "cluster":
            sizes = np.bincount(assignment).astype(np.float64)
            shares = torch.as_tensor(sizes / sizes.sum(), dtype=torch.float32, device=self.device)
        return fit_mapping(torch.as_tensor(np.ascontiguousarray(measured), dtype=torch.float32, device=self.device),
                           torch.as_tensor(profiles, dtype=torch.float32, device=self.device),
                           steps=s.steps, lr=s.lr, batch_size=s.batch_size, shares=shares, seed=self.seed,
                           log=self.log)

    # ------------------------------------------------------------------ BaseImputer API
    def _fit(self) -> None:
        features = np.arange(self.paired.n_features)
        self._assignment = self._assign(features)
        self._weights = self._map(self._assignment, features, np.arange(self.paired.n_cells))

    def _predict_block(self, cells: np.ndarray, stats) -> np.ndarray:
        """Mapping weights of ``cells`` times the clusters' mean target expression."""
        if "targets" not in self._cache:  # the clusters' target profiles, once per process
            self._cache["targets"] = torch.as_tensor(
                cluster_means(self._assignment, self.paired.reference_targets), device=self.device)
        rows = torch.as_tensor(cells, device=self._weights.device)
        return (self._weights[rows] @ self._cache["targets"]).cpu().numpy()

    def _reliability(self, prediction) -> np.ndarray:
        if not self.architecture.reliability:
            return np.full(prediction.shape[1], np.nan)

        # The whole procedure is refitted without the held-out genes, k-means included:
        # clusters built with them are tighter in exactly those genes, and reusing them made
        # the held-out accuracy an optimistic, miscalibrated guide (docs/notes/mapping.md).
        def predict_heldout(train_cols, heldout_cols, cells):
            assignment = self._assign(train_cols)
            weights = self._map(assignment, train_cols, cells)
            heldout = torch.as_tensor(cluster_means(assignment, self.paired.reference_X[:, heldout_cols]),
                                      device=weights.device)
            return (weights @ heldout).cpu().numpy()

        history = {k: list(v) for k, v in self.history.items()}
        try:
            return reliability_from_heldout(self.paired, predict_heldout, prediction, max_cells=_RELIABILITY_CELLS,
                                            seed=self.seed)
        finally:
            self.history = history  # the refits' similarities are not the model's

    def _state_dict(self) -> dict:
        return {"weights": self._weights, "assignment": torch.as_tensor(self._assignment, dtype=torch.int64)}

    def _load_state_dict(self, state: dict) -> None:
        weights = state["weights"].to(torch.float32)
        assignment = state["assignment"].to(torch.int64).cpu().numpy()
        n_clusters = weights.shape[1] if weights.ndim == 2 else -1
        if (weights.ndim != 2 or weights.shape[0] != self.paired.n_cells or assignment.shape != (self.paired.n_reference,)
                or not bool(torch.isfinite(weights).all()) or n_clusters < 1
                or not np.array_equal(np.unique(assignment), np.arange(n_clusters))):
            raise SpatialImputeInputError(
                "path", f"mapping weights of {self.paired.n_cells} cells over clusters of {self.paired.n_reference} "
                        "reference cells (every cluster used)",
                f"weights {tuple(weights.shape)}, assignment {tuple(assignment.shape)}",
                "the folder is damaged or was edited: save the model again",
            )
        self._weights, self._assignment = weights, assignment


def cluster_means(assignment: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Mean of the rows of ``X`` in each cluster, ``(n_clusters, n_columns)`` float32."""
    import scipy.sparse as sp

    n_clusters = int(assignment.max()) + 1
    counts = np.bincount(assignment, minlength=n_clusters).astype(np.float64)
    indicator = sp.csr_matrix((1.0 / counts[assignment], (assignment, np.arange(len(assignment)))),
                              shape=(n_clusters, len(assignment)), dtype=np.float32)
    return np.asarray(indicator @ np.asarray(X, dtype=np.float32), dtype=np.float32)


def cluster_reference(X: np.ndarray, n_clusters: int, labels: np.ndarray | None = None, *, n_components: int = 30,
                      seed: int = 0) -> np.ndarray:
    """Cluster of each row of ``X`` (reference cells x panel genes), clusters numbered 0..C-1, none empty.

    Genes are z-scored (and projected on ``n_components`` principal components when there
    are more, fitted on a subset of at most 50 rows a cluster); k-means with ``n_clusters`` centres (every row its own cluster when
    ``n_clusters`` reaches the number of rows). With ``labels`` the clusters are shared out
    among the labels in proportion to their sizes (at least one each) and k-means runs
    within each label.
    """
    n = X.shape[0]
    if n_clusters >= n:
        return np.arange(n, dtype=np.int64)
    Z = standardize_genes(X)
    if Z.shape[1] > n_components:
        from sklearn.decomposition import PCA

        rng = np.random.default_rng(seed)
        n_fit = min(_KMEANS_MAX_ROWS, _KMEANS_ROWS_PER_CLUSTER * max(n_clusters, n_components))
        fit_rows = np.sort(rng.choice(n, n_fit, replace=False)) if n > n_fit else slice(None)
        pca = PCA(n_components=n_components, svd_solver="randomized", iterated_power=2,
                  random_state=seed).fit(Z[fit_rows])
        Z = pca.transform(Z).astype(np.float32)
    if labels is None:
        return _kmeans(Z, n_clusters, seed)
    groups, codes = np.unique(labels, return_inverse=True)
    sizes = np.bincount(codes)
    shares = np.minimum(sizes, np.maximum(1, np.round(n_clusters * sizes / n).astype(np.int64)))
    out = np.empty(n, dtype=np.int64)
    offset = 0
    for g in range(len(groups)):
        rows = np.flatnonzero(codes == g)
        out[rows] = _kmeans(Z[rows], int(shares[g]), seed) + offset
        offset = int(out[rows].max()) + 1
    return out


def _kmeans(Z: np.ndarray, k: int, seed: int) -> np.ndarray:
    """k-means labels of the rows of ``Z`` (fitted on a subset when large), empty clusters dropped."""
    n = Z.shape[0]
    if k <= 1:
        return np.zeros(n, dtype=np.int64)
    if k >= n:
        return np.arange(n, dtype=np.int64)
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(seed)
    n_fit = min(_KMEANS_MAX_ROWS, _KMEANS_ROWS_PER_CLUSTER * k)
    fit_rows = np.sort(rng.choice(n, n_fit, replace=False)) if n > n_fit else slice(None)
    km = KMeans(n_clusters=k, n_init=1, max_iter=30, random_state=seed).fit(Z[fit_rows])
    labels = km.predict(Z).astype(np.int64)
    _, labels = np.unique(labels, return_inverse=True)  # renumber 0..C-1 without empty clusters
    return labels.astype(np.int64)
