"""Reliability calibration (docs/benchmark.md): do higher reliability scores mean higher accuracy?"""

from __future__ import annotations

import numpy as np

from .metrics import spearman_vectors

__all__ = ["reliability_calibration"]


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
