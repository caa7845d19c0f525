"""Stacking: non-negative weights for the members' predictions, on a common per-gene scale.

Each member's prediction of a gene is put on a common scale by its own mean and standard
deviation over cells (z-scores), so that members whose outputs are shrunk (wide
neighbourhoods) or shifted count by their ranking of cells, not their spread. The weights
minimise the squared error between the weighted sum of the members' z-scores and the
measured z-scores of the held-out panel genes, pooled over genes and cells, under
non-negativity (an NNLS on the members' Gram matrix), averaged over bootstrap samples of the
genes. The combination is mapped back to the log-normalised scale of the member with the
largest weight.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from scipy.optimize import nnls

from ...data.normalize import column_moments

#: Smallest weight a member keeps: below it, a member moves the combination by less than this
#: fraction of a gene's standard deviation but would cost a full training and its share of
#: every prediction block, so it gets weight 0 and the other weights are fitted again.
MIN_WEIGHT = 0.01

#: Bootstrap samples of the genes whose NNLS weights :func:`stack_weights` averages.
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

    The weights are the mean of the NNLS fits on :data:`GENE_BAGS` bootstrap samples of the
    genes: the genes to impute are other genes than these, so the weights' variance over the
    genes is the one to average out. Members whose weight would be under :data:`MIN_WEIGHT`
    get 0, and the others' weights are fitted again without them (repeatedly, until every
    weight is 0 or at least that).

    Parameters
    ----------
    truth
        Measured values, cells x genes.
    predictions
        One held-out prediction per member, each the shape of ``truth``.
    seed
        Seed of the bootstrap samples.
    """
    z_truth = zscores(truth, *gene_moments(truth)).astype(np.float64)
    z = [zscores(p, *gene_moments(p)).astype(np.float64) for p in predictions]
    m, n_genes = len(z), z_truth.shape[1]
    gram = np.empty((n_genes, m, m))  # per gene, so that a bag of genes sums its genes' terms
    target = np.empty((n_genes, m))
    for i in range(m):
        target[:, i] = np.einsum("cg,cg->g", z[i], z_truth)
        for j in range(i, m):
            gram[:, i, j] = gram[:, j, i] = np.einsum("cg,cg->g", z[i], z[j])
    bags = gene_bags(n_genes, seed)
    kept = np.arange(m)
    while True:
        fitted = np.mean([_nnls_weights(np.tensordot(bag, gram[:, kept][:, :, kept], axes=1),
                                        bag @ target[:, kept]) for bag in bags], axis=0)
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


def _nnls_weights(gram: np.ndarray, target: np.ndarray) -> np.ndarray:
    """NNLS weights normalised to sum to 1 from a Gram matrix and its target (equal weights
    when no member agrees with the measurement)."""
    m = len(target)
    gram = gram + 1e-6 * np.trace(gram) / m * np.eye(m)  # members can be collinear (kNN grid)
    upper = np.linalg.cholesky(gram).T
    fitted, _ = nnls(upper, np.linalg.solve(upper.T, target))
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
