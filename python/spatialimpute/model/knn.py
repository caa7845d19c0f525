"""kNN baseline: joint embedding of panel genes, cosine neighbours in the reference, weighted mean."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from .._validation import SpatialImputeInputError
from ..data.neighbors import find_knn, knn_heldout_predictor, neighbor_weights, weighted_neighbor_mean
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

    Both datasets are embedded jointly from the panel genes (per-dataset z-scores, PCA when the
    panel is large), the ``k`` nearest reference cells of each spatial cell are found by
    cosine similarity in chunks, and the target genes' log-normalised reference expression is
    averaged with weights proportional to the cosine similarity. Reliability is learnt from
    the method's own held-out panel genes (:mod:`spatialimpute.reliability`).

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
        p = self.architecture
        self._neighbors = find_knn(self.paired, np.arange(self.paired.n_features), np.arange(self.paired.n_cells),
                                   k=min(p.k, self.paired.n_reference), n_components=p.n_components,
                                   seed=self.seed, device=self.device)

    def _predict_block(self, cells: np.ndarray, stats) -> np.ndarray:
        """Weighted mean of the target genes over the fit-time neighbours of ``cells``."""
        if "targets" not in self._cache:  # the reference's target genes: on the CPU a view, not a copy
            self._cache["targets"] = torch.as_tensor(self.paired.reference_targets, device=self.device)
        indices, distances = self._neighbors
        rows = torch.as_tensor(cells, device=indices.device)
        weights = neighbor_weights(distances[rows], self.architecture.weighting)
        return weighted_neighbor_mean(indices[rows], weights, self._cache["targets"]).cpu().numpy()

    def _reliability(self, prediction) -> np.ndarray:
        p = self.architecture
        if not p.reliability:
            return np.full(prediction.shape[1], np.nan)
        predict_heldout = knn_heldout_predictor(self.paired, k=min(p.k, self.paired.n_reference), n_components=p.n_components,
                                                weighting=p.weighting, seed=self.seed, device=self.device)
        return reliability_from_heldout(self.paired, predict_heldout, prediction, seed=self.seed)

    def _state_dict(self) -> dict:
        indices, distances = self._neighbors
        return {"indices": indices, "distances": distances}

    def _load_state_dict(self, state: dict) -> None:
        indices, distances = state["indices"].to(torch.int64), state["distances"].to(torch.float32)
        k = min(self.architecture.k, self.paired.n_reference)
        shape = (self.paired.n_cells, k)
        if (tuple(indices.shape) != shape or tuple(distances.shape) != shape
                or indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.paired.n_reference)):
            raise SpatialImputeInputError(
                "path", f"neighbour tables of shape {shape} indexing {self.paired.n_reference} reference cells",
                f"indices {tuple(indices.shape)}, distances {tuple(distances.shape)}",
                "the folder is damaged or was edited: save the model again",
            )
        self._neighbors = (indices, distances)
