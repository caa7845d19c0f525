"""Refinement of the combined prediction, each step with a strength chosen on the held-out genes.

Spatial smoothing over the neighbour graph, then residual propagation over a gene graph.

``smooth(values, neighbors, s) = (1 - s) * values + s * mean over each cell's neighbours``
(neighbours within the cell's own section). The neighbourhood size and the strength are
chosen from a fixed grid by the mean Spearman correlation of the held-out panel genes. No
smoothing is kept unless the best grid point beats it by more than one standard error of
the per-gene gain, so smoothing is used only where the data show that it helps. Moran's I of the refined held-out predictions is reported next to
the measured values' as a guard against invented spatial structure.

Residual propagation (the idea SPRITE published): each gene is corrected by the weighted
held-out residuals (measured minus predicted) of its most correlated panel genes in the
reference, ``prediction + strength * sum_h w_gh residual_h``, with the strength chosen the
same way on the held-out genes (a gene never borrows its own residual there).
"""

from __future__ import annotations

import numpy as np

from ..._stats import average_ranks, pearson_columns
from ...data.neighbors import neighbor_mean
from ...data.spatial_graph import section_knn
from ...reliability import morans_i

#: Neighbourhood sizes and strengths the inner cross-validation chooses among.
NEIGHBORS = (5, 15, 30)
STRENGTHS = (0.0, 0.25, 0.5, 0.75, 1.0)


def smooth(values: np.ndarray, neighbors: np.ndarray, strength: float) -> np.ndarray:
    """Blend each row with the mean of its neighbours' rows (``neighbors``: cells x k indices)."""
    if strength == 0:
        return values
    return (1.0 - strength) * values + strength * neighbor_mean(values, neighbors)


def _spearman_against(truth_ranks: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """Per-gene Spearman correlation with a measurement whose ranks are already computed."""
    return pearson_columns(truth_ranks, average_ranks(np.asarray(prediction, dtype=np.float64)))[0]


def choose_smoothing(truth: np.ndarray, prediction: np.ndarray, coords: np.ndarray,
                     sample_ids: np.ndarray) -> tuple[dict, np.ndarray]:
    """The grid's best ``(neighbors, strength)`` for the held-out prediction (or none), with every score.

    Returns
    -------
    (dict, numpy.ndarray)
        The choice, and the held-out prediction refined by it. The dict has
        ``neighbors``, ``strength`` (the choice), ``spcc`` (its mean held-out Spearman
        correlation), ``grid`` (``[k, strength, spcc]`` rows), ``gain_standard_error`` (of the
        best grid point's mean gain over no smoothing), and ``morans_i_measured`` /
        ``morans_i_refined`` (mean over the held-out genes, on the 6-neighbour graph).
    """
    truth_ranks = average_ranks(np.asarray(truth, dtype=np.float64))
    unsmoothed = _spearman_against(truth_ranks, prediction)
    none = {"neighbors": 0, "strength": 0.0, "spcc": float(unsmoothed.mean())}
    best, best_genes = none, unsmoothed
    grid = [[0, 0.0, none["spcc"]]]
    graphs = {0: None}
    for k in NEIGHBORS:
        graphs[k] = section_knn(coords, k, sample_ids)
        for strength in STRENGTHS[1:]:
            genes = _spearman_against(truth_ranks, smooth(prediction, graphs[k], strength))
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
    return best, refined


#: Panel genes each gene borrows residuals from, and the strengths tried (0 is the default).
RESIDUAL_GENES = 10
RESIDUAL_STRENGTHS = (0.05, 0.1, 0.25, 0.5, 1.0)


def residual_graph(reference_panel: np.ndarray, reference_genes: np.ndarray, *, exclude_self: bool = False,
                   k: int = RESIDUAL_GENES):
    """Each gene's ``k`` most correlated panel genes in the reference, with weights summing to 1.

    Parameters
    ----------
    reference_panel
        Reference cells x panel genes (log-normalised).
    reference_genes
        Reference cells x the genes to correct (the panel genes themselves with
        ``exclude_self=True``, so that no gene borrows its own residual).

    Returns
    -------
    scipy.sparse.csc_matrix
        (panel genes, genes): column ``g`` holds the non-negative correlations of gene ``g``'s
        ``k`` panel neighbours, normalised to sum 1 (a column of zero correlations is empty).
    """
    import scipy.sparse as sp

    a = _standardized(reference_panel)
    b = _standardized(reference_genes)
    corr = (b.T @ a) / a.shape[0]
    if exclude_self:
        np.fill_diagonal(corr, -np.inf)
    k = min(k, a.shape[1] - int(exclude_self))
    indices = np.argsort(-corr, axis=1)[:, :k]
    weights = np.clip(np.take_along_axis(corr, indices, axis=1), 0.0, None)
    total = weights.sum(axis=1, keepdims=True)
    weights = np.divide(weights, total, out=np.zeros_like(weights), where=total > 0)
    genes = np.repeat(np.arange(corr.shape[0]), k)
    return sp.csc_matrix((weights.ravel(), (indices.ravel(), genes)), shape=(a.shape[1], corr.shape[0]))


def _standardized(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    sd = x.std(axis=0)
    return (x - x.mean(axis=0)) / np.where(sd > 0, sd, 1.0)


def propagate_residuals(residuals: np.ndarray, graph) -> np.ndarray:
    """Per cell, each gene's weighted sum of its panel neighbours' residuals (cells x genes, float32)."""
    return np.asarray(graph.T.dot(np.asarray(residuals, dtype=np.float32).T).T, dtype=np.float32)


def choose_residual_propagation(truth: np.ndarray, prediction: np.ndarray, reference_panel: np.ndarray) -> dict:
    """The strength (0 allowed) of residual propagation over the gene graph, chosen on the held-out genes.

    Each held-out panel gene is corrected by its correlated panel genes' held-out residuals
    (never its own); a strength replaces 0 only if its mean gain exceeds one standard error
    of the per-gene gain (as for the smoothing).
    """
    correction = propagate_residuals(truth - prediction, residual_graph(reference_panel, reference_panel,
                                                                        exclude_self=True))
    truth_ranks = average_ranks(np.asarray(truth, dtype=np.float64))
    base = _spearman_against(truth_ranks, prediction)
    best, best_genes, grid = 0.0, base, [[0.0, float(base.mean())]]
    for strength in RESIDUAL_STRENGTHS:
        genes = _spearman_against(truth_ranks, prediction + strength * correction)
        grid.append([strength, float(genes.mean())])
        if genes.mean() > best_genes.mean():
            best, best_genes = strength, genes
    gain = best_genes - base
    standard_error = float(gain.std(ddof=1) / np.sqrt(gain.size)) if gain.size > 1 else float("inf")
    if not gain.mean() > standard_error:
        best, best_genes = 0.0, base
    return {"strength": best, "spcc": float(best_genes.mean()), "grid": grid, "gain_standard_error": standard_error}
