"""Stacking: non-negative weights for the members' predictions, on a common per-gene scale.

Each member's prediction of a gene is put on a common scale by its own mean and standard
deviation over cells (z-scores), so that members whose outputs are shrunk (wide
neighbourhoods) or shifted count by their ranking of cells, not their spread. The weights,
non-negative and summing to 1, maximise the mean over the held-out panel genes of the
correlation between the weighted sum of the members' z-scores and the measured ranks (the
accuracy measure, per-gene Spearman correlation, with only the measurement ranked, so that it
is smooth in the weights), averaged over bootstrap samples of the genes. The combination is
mapped back to the log-normalised scale of the member with the largest weight.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from scipy.optimize import minimize

from ..._stats import average_ranks
from ...data.normalize import column_moments

#: Smallest weight a member keeps: below it, a member moves the combination by less than this
#: fraction of a gene's standard deviation but would cost a full training and its share of
#: every prediction block, so it gets weight 0 and the other weights are fitted again.
MIN_WEIGHT = 0.01

#: Bootstrap samples of the genes whose fitted weights :func:`stack_weights` averages.
GENE_BAGS = 50


def gene_moments(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and standard deviation (a constant column gets standard deviation 1),
    float64, in row chunks."""
    mean, sd = column_moments(values)
    return mean, np.where(sd > 1e-12, sd, 1.0)


def zscores(values: np.ndarray, mean: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """``(values - mean) / sd`` column-wise, computed in float32 (no float64 copy of ``values``)."""
    out = np.asarray(values, dtype=np.float32) - np.asarray(mean, dtype=np.float32)
    out *= (1.0 / np.asarray(sd, dtype=np.float64)).astype(np.float32)
    return out


def stack_weights(truth: np.ndarray, predictions: list[np.ndarray], seed: int = 0) -> np.ndarray:
    """Non-negative weights (summing to 1) of the members' z-scored predictions.

    The weights maximise the mean over genes of the correlation over cells between the
    weighted sum of the members' z-scores and the ranks of the measurement. They are the mean
    of such fits on :data:`GENE_BAGS` bootstrap samples of the genes: the genes to impute are
    other genes than these, so the weights' variance over the genes is the one to average out.
    Members whose weight would be under :data:`MIN_WEIGHT` get 0, and the others' weights are
    fitted again without them (repeatedly, until every weight is 0 or at least that).

    Parameters
    ----------
    truth
        Measured values, cells x genes.
    predictions
        One held-out prediction per member, each the shape of ``truth``.
    seed
        Seed of the bootstrap samples.
    """
    ranks = average_ranks(np.asarray(truth, dtype=np.float64))
    z_truth = zscores(ranks, *gene_moments(ranks)).astype(np.float64)
    z = [zscores(p, *gene_moments(p)).astype(np.float64) for p in predictions]
    m, (n_cells, n_genes) = len(z), z_truth.shape
    gram = np.empty((n_genes, m, m))  # per gene: the members' correlations over cells
    target = np.empty((n_genes, m))  # per gene: each member's correlation with the measured ranks
    for i in range(m):
        target[:, i] = np.einsum("cg,cg->g", z[i], z_truth) / n_cells
        for j in range(i, m):
            gram[:, i, j] = gram[:, j, i] = np.einsum("cg,cg->g", z[i], z[j]) / n_cells
    bags = gene_bags(n_genes, seed)
    kept = np.arange(m)
    while True:
        fitted = np.mean([_correlation_weights(gram[:, kept][:, :, kept], target[:, kept], bag) for bag in bags],
                         axis=0)
        negligible = (fitted > 0) & (fitted < MIN_WEIGHT)
        if not negligible.any():
            break
        kept = kept[~negligible]
    weights = np.zeros(m)
    weights[kept] = fitted / fitted.sum()
    return weights


def gene_bags(n_genes: int, seed: int) -> np.ndarray:
    """How often each gene is drawn in each of :data:`GENE_BAGS` bootstrap samples of the
    genes (bags x genes counts, each row summing to ``n_genes``)."""
    return np.random.default_rng(seed).multinomial(n_genes, np.full(n_genes, 1.0 / n_genes), size=GENE_BAGS)


def _correlation_weights(gram: np.ndarray, target: np.ndarray, gene_counts: np.ndarray) -> np.ndarray:
    """Weights on the simplex maximising the ``gene_counts``-weighted mean per-gene correlation.

    With unit-variance members, gene ``g``'s correlation is ``w.b_g / sqrt(w' G_g w)``
    (``b_g = target[g]``, ``G_g = gram[g]``); SLSQP from equal weights, with its gradient.
    """
    m = target.shape[1]
    if m == 1:
        return np.ones(1)
    share = gene_counts / gene_counts.sum()

    def negative_mean_correlation(w):
        covariance = target @ w
        gram_w = np.einsum("gij,j->gi", gram, w)
        sd = np.sqrt(np.maximum(gram_w @ w, 0.0) + 1e-12)
        gradient = target / sd[:, None] - (covariance / sd**3)[:, None] * gram_w
        return -share @ (covariance / sd), -share @ gradient

    result = minimize(negative_mean_correlation, np.full(m, 1.0 / m), jac=True, method="SLSQP",
                      bounds=[(0.0, 1.0)] * m,
                      constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones(m)}])
    fitted = np.clip(result.x, 0.0, None)
    return fitted / fitted.sum() if fitted.sum() > 0 else np.full(m, 1.0 / m)


def member_agreement(combined_sd: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per gene, the weighted mean correlation between the members' predictions over cells.

    The variance of the weighted sum of unit-variance z-scores is ``sum_mn w_m w_n r_mn``, so
    with ``c`` the sum of squared weights, ``(sd**2 - c) / (1 - c)`` is the mean of the
    correlations ``r_mn`` between different members weighted by ``w_m w_n``; 1 with one member.
    """
    weights = np.asarray(weights, dtype=np.float64)
    own = float((weights**2).sum())
    if own >= 1.0 - 1e-12:
        return np.ones_like(np.asarray(combined_sd, dtype=np.float64))
    return (np.asarray(combined_sd, dtype=np.float64) ** 2 - own) / (1.0 - own)


def combine(predictions: Iterable[np.ndarray], means: list[np.ndarray], sds: list[np.ndarray],
            weights: np.ndarray) -> np.ndarray:
    """Weighted sum of the members' z-scores (float32), members with zero weight skipped.

    ``predictions`` may be a generator, so that the members' predictions are not all held at once.
    """
    out = None
    for values, mean, sd, w in zip(predictions, means, sds, weights):
        if w > 0:
            part = zscores(values, mean, sd)
            part *= np.float32(w)
            if out is None:
                out = part
            else:
                out += part
    return out
