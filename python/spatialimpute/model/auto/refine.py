"""Spatial refinement: propagate a prediction over the spatial neighbour graph, by a chosen strength.

``smooth(values, neighbors, s) = (1 - s) * values + s * mean over each cell's neighbours``
(neighbours within the cell's own section). The neighbourhood size and the strength are
chosen from a fixed grid by the mean Spearman correlation of the held-out panel genes. No
smoothing is kept unless the best grid point beats it by more than one standard error of
the per-gene gain, so smoothing is used only where the data show that it helps. Moran's I of the refined held-out predictions is reported next to
the measured values' as a guard against invented spatial structure.
"""

from __future__ import annotations

import numpy as np

from ..._stats import spearman_columns
from ...data.spatial_graph import section_knn
from ...reliability import morans_i

#: Neighbourhood sizes and strengths the inner cross-validation chooses among.
NEIGHBORS = (5, 15, 30)
STRENGTHS = (0.0, 0.25, 0.5, 0.75, 1.0)


def smooth(values: np.ndarray, neighbors: np.ndarray, strength: float) -> np.ndarray:
    """Blend each row with the mean of its neighbours' rows (``neighbors``: cells x k indices)."""
    if strength == 0:
        return values
    return (1.0 - strength) * values + strength * values[neighbors].mean(axis=1)


def choose_smoothing(truth: np.ndarray, prediction: np.ndarray, coords: np.ndarray, sample_ids: np.ndarray) -> dict:
    """The grid's best ``(neighbors, strength)`` for the held-out prediction (or none), with every score.

    Returns
    -------
    dict
        ``neighbors``, ``strength`` (the choice), ``spcc`` (its mean held-out Spearman
        correlation), ``grid`` (``[k, strength, spcc]`` rows), ``gain_standard_error`` (of the
        best grid point's mean gain over no smoothing), and ``morans_i_measured`` /
        ``morans_i_refined`` (mean over the held-out genes, on the 6-neighbour graph).
    """
    unsmoothed = spearman_columns(truth, prediction)
    none = {"neighbors": 0, "strength": 0.0, "spcc": float(unsmoothed.mean())}
    best, best_genes = none, unsmoothed
    grid = [[0, 0.0, none["spcc"]]]
    graphs = {0: None}
    for k in NEIGHBORS:
        graphs[k] = section_knn(coords, k, sample_ids)
        for strength in STRENGTHS[1:]:
            genes = spearman_columns(truth, smooth(prediction, graphs[k], strength))
            grid.append([k, strength, float(genes.mean())])
            if genes.mean() > best["spcc"]:
                best, best_genes = {"neighbors": k, "strength": strength, "spcc": float(genes.mean())}, genes
    gain = best_genes - unsmoothed
    standard_error = float(gain.std(ddof=1) / np.sqrt(gain.size)) if gain.size > 1 else float("inf")
    if not gain.mean() > standard_error:
        best = none
    guard = section_knn(coords, 6, sample_ids)
    refined = smooth(prediction, graphs[best["neighbors"]], best["strength"]) if best["strength"] else prediction
    best.update(grid=grid, gain_standard_error=standard_error, morans_i_measured=float(morans_i(truth, guard).mean()),
                morans_i_refined=float(morans_i(refined, guard).mean()),
                morans_i_unrefined=float(morans_i(prediction, guard).mean()))
    return best
