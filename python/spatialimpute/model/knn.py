"""kNN baseline: joint embedding of panel genes, cosine neighbours in the reference, weighted mean."""

from __future__ import annotations

import numpy as np
import torch

from .._validation import SpatialImputeInputError, check_bool, check_choice, check_int
from ..data.neighbors import knn_cosine, weighted_neighbor_mean
from ..data.normalize import standardize_genes
from ..reliability import reliability_from_heldout
from ._base import BaseImputer

#: The joint PCA is fitted on at most this many stacked cells (a random subset above it);
#: every cell is then projected, in blocks of this many rows.
_PCA_MAX_ROWS = 200_000


def joint_embedding(spatial: np.ndarray, reference: np.ndarray, n_components: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Embed spatial and reference cells in one space built from the shared genes.

    Each gene is z-scored within each dataset (removing per-gene shifts and scale
    differences between technologies); when there are more genes than ``n_components`` the
    stacked cells are projected on their principal components.
    """
    a, b = standardize_genes(spatial), standardize_genes(reference)
    if a.shape[1] <= n_components:
        return a, b
    from sklearn.decomposition import PCA

    n_a, n_total = a.shape[0], a.shape[0] + b.shape[0]
    rows = np.arange(n_total)
    if n_total > _PCA_MAX_ROWS:
        rows = np.sort(np.random.default_rng(seed).choice(n_total, _PCA_MAX_ROWS, replace=False))
    pca = PCA(n_components=n_components, svd_solver="randomized", random_state=seed)
    pca.fit(np.vstack([a[rows[rows < n_a]], b[rows[rows >= n_a] - n_a]]))
    return _project(pca, a), _project(pca, b)


def _project(pca, X: np.ndarray) -> np.ndarray:
    """``pca.transform(X)`` as float32, block by block (no full-size centred copy)."""
    out = np.empty((X.shape[0], pca.n_components_), dtype=np.float32)
    for start in range(0, X.shape[0], _PCA_MAX_ROWS):
        out[start:start + _PCA_MAX_ROWS] = pca.transform(X[start:start + _PCA_MAX_ROWS])
    return out


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
    values = torch.as_tensor(paired.reference_X[:, columns], device=device)
    return weighted_neighbor_mean(indices, neighbor_weights(distances, weighting), values).cpu().numpy()


def find_knn(paired, feature_cols: np.ndarray, cells: np.ndarray, *, k: int, n_components: int, seed: int, device):
    """Cosine neighbours of ``cells`` in the reference, embedded jointly from ``feature_cols``."""
    sp_emb, ref_emb = joint_embedding(
        paired.spatial_X[np.ix_(cells, feature_cols)], paired.reference_X[:, feature_cols], n_components, seed,
    )
    return knn_cosine(sp_emb, ref_emb, k, device=device)


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


class KNNImpute(BaseImputer):
    """kNN baseline: each spatial cell takes the weighted mean of its nearest reference cells.

    Both datasets are embedded jointly from the panel genes (per-dataset z-scores, PCA when the
    panel is large), the ``k`` nearest reference cells of each spatial cell are found by
    cosine similarity in chunks, and the target genes' log-normalised reference expression is
    averaged with weights proportional to the cosine similarity. Reliability is learnt from
    the method's own held-out panel genes (:mod:`spatialimpute.reliability`).

    Parameters
    ----------
    spatial, reference, genes, seed, device, **kwargs
        See :class:`~spatialimpute.model._base.BaseImputer`.
    **params
        ``k`` (neighbours, 50), ``n_components`` (joint PCA size, 30), ``weighting``
        (``"similarity"`` or ``"uniform"``), ``reliability`` (learn reliability scores, True).
    """

    method_name = "knn"

    @classmethod
    def default_params(cls) -> dict:
        return {"k": 50, "n_components": 30, "weighting": "similarity", "reliability": True}

    @classmethod
    def _merge_params(cls, params: dict) -> dict:
        """Defaults merged with ``params``, each checked before any work."""
        p = super()._merge_params(params)
        p["k"] = check_int(p["k"], "k", minimum=1)
        p["n_components"] = check_int(p["n_components"], "n_components", minimum=1)
        check_choice(p["weighting"], "weighting", ["similarity", "uniform"])
        p["reliability"] = check_bool(p["reliability"], "reliability")
        return p

    def _fit(self) -> None:
        p = self.params
        self._neighbors = find_knn(self.paired, np.arange(self.paired.n_features), np.arange(self.paired.n_cells),
                                   k=min(p["k"], self.paired.n_reference), n_components=p["n_components"],
                                   seed=self.seed, device=self.device)

    def _predict(self) -> np.ndarray:
        target_cols = np.arange(self.paired.n_features, self.paired.n_features + self.paired.n_targets)
        return knn_average(self.paired, self._neighbors, target_cols, self.params["weighting"], self.device)

    def _reliability(self, prediction: np.ndarray) -> np.ndarray:
        if not self.params["reliability"]:
            return np.full(prediction.shape[1], np.nan)
        p = self.params
        predict_heldout = knn_heldout_predictor(self.paired, k=min(p["k"], self.paired.n_reference), n_components=p["n_components"],
                                                weighting=p["weighting"], seed=self.seed, device=self.device)
        return reliability_from_heldout(self.paired, predict_heldout, prediction, seed=self.seed)

    def _state_dict(self) -> dict:
        indices, distances = self._neighbors
        return {"indices": indices, "distances": distances}

    def _load_state_dict(self, state: dict) -> None:
        indices, distances = state["indices"].to(torch.int64), state["distances"].to(torch.float32)
        k = min(self.params["k"], self.paired.n_reference)
        shape = (self.paired.n_cells, k)
        if (tuple(indices.shape) != shape or tuple(distances.shape) != shape
                or indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.paired.n_reference)):
            raise SpatialImputeInputError(
                "path", f"neighbour tables of shape {shape} indexing {self.paired.n_reference} reference cells",
                f"indices {tuple(indices.shape)}, distances {tuple(distances.shape)}",
                "the folder is damaged or was edited: save the model again",
            )
        self._neighbors = (indices, distances)
