"""kNN baseline: joint embedding of panel genes, cosine neighbours in the reference, weighted mean."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from ..data.neighbors import JointNeighbors, knn_heldout_predictor, neighbor_weights, weighted_neighbor_mean
from ..reliability import reliability_from_heldout
from ._base import BaseImputer
from ._config import Config, boolean, choice, integer


@dataclasses.dataclass(frozen=True)
class KNNArchitecture(Config):
    """Options of :class:`KNNImpute`.

    ``k``: neighbours per spatial cell (capped at the number of reference cells);
    ``n_components``: size of the joint PCA of the panel genes; ``weighting``:
    ``"similarity"`` (weights proportional to the cosine similarity) or ``"uniform"``;
    ``reliability``: learn per-gene reliability scores (NaN otherwise).
    """

    k: int = integer(50, minimum=1)
    n_components: int = integer(30, minimum=1)
    weighting: str = choice("similarity", ("similarity", "uniform"))
    reliability: bool = boolean(True)


@dataclasses.dataclass(frozen=True)
class KNNSchedule(Config):
    """The kNN baseline has nothing to train."""


class KNNImpute(BaseImputer):
    """kNN baseline: each spatial cell takes the weighted mean of its nearest reference cells.

    Training fits the joint embedding of both datasets from the panel genes (per-dataset
    z-scores, PCA when the panel is large). Each block of spatial cells is then embedded, its
    cells' ``k`` nearest reference cells are found by cosine similarity, and the target genes'
    log-normalised reference expression is averaged with weights proportional to the cosine
    similarity; nothing kept between blocks grows with the number of cells. Reliability is
    learnt from the method's own held-out panel genes (:mod:`spatialimpute.reliability`).

    Parameters
    ----------
    spatial, reference, genes, seed, device, **kwargs
        See :class:`~spatialimpute.model._base.BaseImputer`.
    **options
        See :class:`KNNArchitecture`.
    """

    method_name = "knn"

    Architecture = KNNArchitecture
    Schedule = KNNSchedule

    def _fit(self) -> None:
        p, pd_ = self.architecture, self.paired
        self._joint = JointNeighbors.fit(pd_.spatial_X, pd_.reference_features, p.n_components, self.seed)

    def _predict_block(self, cells: np.ndarray, stats) -> np.ndarray:
        """Weighted mean of the target genes over the neighbours of ``cells``, found for the block."""
        return self.average(*self.neighbors(cells, self.architecture.k))

    def neighbors(self, cells: np.ndarray, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``k`` nearest reference cells of the spatial ``cells`` in the joint space (indices, cosine
        distances; nearest first, so the first ``j`` columns are the ``j`` nearest)."""
        return self._joint.search(self.paired.spatial_X[cells], min(k, self.paired.n_reference), self.device)

    def average(self, indices: torch.Tensor, distances: torch.Tensor) -> np.ndarray:
        """The target genes averaged over the ``k`` first neighbours with this model's weighting."""
        if "targets" not in self._cache:  # the reference's target genes: on the CPU a view, not a copy
            self._cache["targets"] = torch.as_tensor(self.paired.reference_targets, device=self.device)
        k = min(self.architecture.k, self.paired.n_reference)
        weights = neighbor_weights(distances[:, :k], self.architecture.weighting)
        return weighted_neighbor_mean(indices[:, :k], weights, self._cache["targets"]).cpu().numpy()

    def _reliability(self, prediction) -> np.ndarray:
        p = self.architecture
        if not p.reliability:
            return np.full(prediction.shape[1], np.nan)
        predict_heldout = knn_heldout_predictor(self.paired, k=min(p.k, self.paired.n_reference), n_components=p.n_components,
                                                weighting=p.weighting, seed=self.seed, device=self.device)
        return reliability_from_heldout(self.paired, predict_heldout, prediction, seed=self.seed)

    def _state_dict(self) -> dict:
        return {f"embedding.{k}": v for k, v in self._joint.embedding.state().items()}

    def _load_state_dict(self, state: dict) -> None:
        self._joint = JointNeighbors.from_state(
            {k[len("embedding."):]: v for k, v in state.items() if k.startswith("embedding.")}, self.paired.reference_features)
