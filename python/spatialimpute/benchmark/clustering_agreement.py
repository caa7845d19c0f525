"""Clustering agreement (docs/benchmark.md): Leiden on the imputed vs on the measured matrix."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import (
    adjusted_mutual_info_score,
    adjusted_rand_score,
    homogeneity_score,
    normalized_mutual_info_score,
)

__all__ = ["clustering_agreement", "partition_agreement"]

#: Leiden settings of the protocol.
LEIDEN_RESOLUTION = 1.0
LEIDEN_NEIGHBORS = 15
LEIDEN_PCS = 50
LEIDEN_SEED = 0


def partition_agreement(reference_labels, labels) -> dict:
    """Agreement of a partition ``labels`` with a reference partition.

    Parameters
    ----------
    reference_labels
        The reference partition (measured clusters or annotated cell types), one per cell.
    labels
        The partition to score (e.g. clusters of the imputed matrix), same cells.

    Returns
    -------
    dict
        ``ari``, ``ami``, ``nmi`` (arithmetic normalisation, scikit-learn's default) and
        ``homogeneity`` (each cluster of ``labels`` holds members of one reference class).
    """
    ref = np.asarray(reference_labels)
    lab = np.asarray(labels)
    if ref.shape != lab.shape:
        raise ValueError(
            f"labels: expected one label per cell ({ref.shape[0]}); found {lab.shape[0]}. "
            "Fix: pass partitions of the same cells."
        )
    return {
        "ari": float(adjusted_rand_score(ref, lab)),
        "ami": float(adjusted_mutual_info_score(ref, lab)),
        "nmi": float(normalized_mutual_info_score(ref, lab)),
        "homogeneity": float(homogeneity_score(ref, lab)),
    }


def _leiden(x: np.ndarray, seed: int) -> np.ndarray:
    from ..data.clustering import leiden

    return np.asarray(
        leiden(x, resolution=LEIDEN_RESOLUTION, n_neighbors=LEIDEN_NEIGHBORS, n_pcs=LEIDEN_PCS, seed=seed)
    )


def clustering_agreement(measured, imputed, labels=None, *, seed: int = LEIDEN_SEED) -> dict:
    """Leiden clusters of the imputed matrix against those of the measured matrix and labels.

    Both matrices are clustered with the project's Leiden helper
    (:func:`spatialimpute.data.clustering.leiden`: resolution 1.0, 15-neighbour graph on the
    PCA, or on the matrix itself when it has at most 50 genes, seed 0).

    Parameters
    ----------
    measured, imputed
        Cells x genes matrices (dense float arrays) of the same cells and genes, on the
        log-normalised scale.
    labels
        Optional annotated labels per cell (e.g. ``obs["cell_type"]``); missing values
        (NaN/None) exclude that cell from the label comparisons.
    seed
        Leiden seed (the protocol uses 0).

    Returns
    -------
    dict
        ``n_clusters_measured``, ``n_clusters_imputed``, ``imputed_vs_measured`` (the scores
        of :func:`partition_agreement`), and when labels are given ``imputed_vs_labels`` and
        ``measured_vs_labels`` (the ceiling a perfect imputation would reach), ``n_labels``.
    """
    measured = np.asarray(measured, dtype=np.float64)
    imputed = np.asarray(imputed, dtype=np.float64)
    if measured.shape != imputed.shape:
        raise ValueError(
            f"imputed: expected the shape of measured {measured.shape}; found {imputed.shape}. "
            "Fix: pass the same cells and genes."
        )
    clusters_measured = _leiden(measured, seed)
    clusters_imputed = _leiden(imputed, seed)
    out = {
        "n_clusters_measured": int(np.unique(clusters_measured).size),
        "n_clusters_imputed": int(np.unique(clusters_imputed).size),
        "imputed_vs_measured": partition_agreement(clusters_measured, clusters_imputed),
    }
    if labels is not None:
        lab = pd.Series(np.asarray(labels, dtype=object))
        keep = lab.notna().to_numpy()
        if keep.shape[0] != measured.shape[0]:
            raise ValueError(
                f"labels: expected one label per cell ({measured.shape[0]}); found {keep.shape[0]}. "
                "Fix: pass obs['cell_type'] of the scored cells."
            )
        if keep.any():
            lab_str = lab[keep].astype(str).to_numpy()
            out["n_labels"] = int(np.unique(lab_str).size)
            out["imputed_vs_labels"] = partition_agreement(lab_str, clusters_imputed[keep])
            out["measured_vs_labels"] = partition_agreement(lab_str, clusters_measured[keep])
    return out
