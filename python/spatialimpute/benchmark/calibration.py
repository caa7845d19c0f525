"""Calibration (docs/benchmark.md): do higher reliability scores mean higher accuracy, do the
intervals cover what they claim, and does a prediction invent spatial structure?"""

from __future__ import annotations

import numpy as np

from .metrics import spearman_vectors

__all__ = ["interval_coverage", "reliability_calibration", "spatial_structure"]


def reliability_calibration(reliability, spcc) -> dict:
    """Compare per-gene reliability scores with the measured per-gene Spearman accuracy.

    Parameters
    ----------
    reliability
        Per-gene reliability scores (1-D); NaN marks a gene without a score (excluded).
    spcc
        Per-gene measured ``spcc`` of the same genes, same order.

    Returns
    -------
    dict
        ``spearman``: Spearman correlation between reliability and spcc over the scored
        genes (0 when undefined, e.g. constant reliability); ``spearman_undefined``;
        ``n_genes``: genes with a score; ``n_top``: size of the top half (``n_genes // 2``,
        at least 1); ``mean_spcc_top_half``: mean spcc of the ``n_top`` genes with the highest
        reliability (ties broken by gene order); ``mean_spcc_all``: mean spcc of the scored
        genes; ``gain_top_half``: their difference. All values are ``None`` when no gene
        has a score.
    """
    rel = np.asarray(reliability, dtype=np.float64).ravel()
    acc = np.asarray(spcc, dtype=np.float64).ravel()
    if rel.shape != acc.shape:
        raise ValueError(
            f"reliability: expected one score per gene ({acc.shape[0]}); found {rel.shape[0]}. "
            "Fix: pass the reliability and spcc of the same genes in the same order."
        )
    scored = np.isfinite(rel)
    n = int(scored.sum())
    result = {"n_genes": n, "spearman": None, "spearman_undefined": None, "n_top": None,
              "mean_spcc_top_half": None, "mean_spcc_all": None, "gain_top_half": None}
    if n == 0:
        return result
    rel, acc = rel[scored], acc[scored]
    rho, undefined = spearman_vectors(rel, acc)
    n_top = max(1, n // 2)
    order = np.argsort(-rel, kind="stable")
    top = float(acc[order[:n_top]].mean())
    everyone = float(acc.mean())
    result.update(spearman=rho, spearman_undefined=undefined, n_top=n_top,
                  mean_spcc_top_half=top, mean_spcc_all=everyone, gain_top_half=top - everyone)
    return result


def interval_coverage(truth, spcc, gene_interval, cell_lower=None, cell_upper=None) -> dict:
    """Empirical coverage of a method's intervals on the held-out genes.

    Parameters
    ----------
    truth
        Measured values, cells x genes.
    spcc
        Measured per-gene Spearman accuracy.
    gene_interval
        (genes, 2) interval of each gene's predicted accuracy (NaN rows: none).
    cell_lower, cell_upper
        Per cell and gene prediction interval (``None``: none).

    Returns
    -------
    dict
        ``gene_interval_coverage`` (share of genes whose spcc falls in their interval) and
        ``gene_interval_width`` (mean width), ``cell_interval_coverage`` (share of cell x gene
        values inside their interval), its spread over genes (``cell_interval_coverage_gene_q10``
        / ``_q90``) and ``cell_interval_width`` (mean width); ``None`` where the method gave no
        interval.
    """
    out = {"gene_interval_coverage": None, "gene_interval_width": None, "cell_interval_coverage": None,
           "cell_interval_coverage_gene_q10": None, "cell_interval_coverage_gene_q90": None,
           "cell_interval_width": None}
    gene_interval = np.asarray(gene_interval, dtype=np.float64)
    scored = np.isfinite(gene_interval).all(axis=1)
    if scored.any():
        acc = np.asarray(spcc, dtype=np.float64)[scored]
        low, high = gene_interval[scored, 0], gene_interval[scored, 1]
        out["gene_interval_coverage"] = float(((acc >= low) & (acc <= high)).mean())
        out["gene_interval_width"] = float((high - low).mean())
    if cell_lower is not None and cell_upper is not None:
        inside = (truth >= cell_lower) & (truth <= cell_upper)
        per_gene = inside.mean(axis=0)
        out["cell_interval_coverage"] = float(inside.mean())
        out["cell_interval_coverage_gene_q10"] = float(np.quantile(per_gene, 0.1))
        out["cell_interval_coverage_gene_q90"] = float(np.quantile(per_gene, 0.9))
        out["cell_interval_width"] = float((cell_upper - cell_lower).mean())
    return out


def spatial_structure(truth, prediction, coords, sample_ids=None, neighbors: int = 6) -> dict:
    """Mean Moran's I over genes of the measured and of the predicted values (6-neighbour graph).

    A prediction far more autocorrelated than the measurement may have invented spatial
    structure (e.g. by smoothing).
    """
    from ..data.spatial_graph import section_knn
    from ..reliability import morans_i

    graph = section_knn(coords, neighbors, sample_ids)
    return {"morans_i_measured": float(morans_i(truth, graph).mean()),
            "morans_i_predicted": float(morans_i(prediction, graph).mean())}
