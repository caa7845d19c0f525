"""Figures: measured vs imputed expression on the tissue; what ``method="auto"`` chose."""

from __future__ import annotations

import numpy as np


def spatial_maps(measured, imputed, genes, *, coords=None, point_size: float | None = None, title: str | None = None):
    """Side-by-side tissue maps of measured and imputed expression for a few genes.

    Parameters
    ----------
    measured
        AnnData with the measured (or true) log-normalised expression of ``genes``, or
        ``None`` to show the imputed maps only.
    imputed
        Result AnnData of :func:`spatialimpute.impute` (coordinates in ``obsm["spatial"]``,
        reliability in ``var``).
    genes
        Genes to show (one row each).
    coords
        Coordinates to plot at; default ``imputed.obsm["spatial"]``.
    point_size
        Marker size; default scaled to the number of cells.
    title
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
    """
    plt = _pyplot()
    from scipy.stats import spearmanr

    genes = list(genes)
    xy = np.asarray(imputed.obsm["spatial"] if coords is None else coords)
    size = point_size if point_size is not None else float(np.clip(20000 / max(len(xy), 1), 0.5, 30))
    n_cols = 1 if measured is None else 2
    fig, axes = plt.subplots(len(genes), n_cols, figsize=(4.2 * n_cols, 3.6 * len(genes)), squeeze=False)
    for row, gene in enumerate(genes):
        pred = np.asarray(imputed[:, gene].X).ravel()
        panels = [("imputed", pred)]
        if measured is not None:
            meas = measured[imputed.obs_names, gene].X
            meas = np.asarray(meas.toarray() if hasattr(meas, "toarray") else meas).ravel()
            panels.insert(0, ("measured", meas))
        for col, (label, values) in enumerate(panels):
            ax = axes[row, col]
            order = np.argsort(values, kind="stable")
            sc = ax.scatter(xy[order, 0], xy[order, 1], c=values[order], s=size, cmap="viridis", linewidths=0)
            name = f"{gene}: {label}"
            if label == "imputed":
                rel = imputed.var.loc[gene, "reliability"] if "reliability" in imputed.var else np.nan
                name += f" (reliability {rel:.2f})" if np.isfinite(rel) else ""
                if measured is not None:
                    rho = spearmanr(panels[0][1], values)[0]
                    name += f"\nSpearman vs measured {0.0 if np.isnan(rho) else rho:.2f}"
            ax.set_title(name, fontsize=9)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
            fig.colorbar(sc, ax=ax, shrink=0.8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def ensemble_choice(result, *, title: str | None = None):
    """Bar charts of an ``auto`` result: each member's inner-CV Spearman correlation and its weight.

    Parameters
    ----------
    result
        AnnData returned by ``si.impute(..., method="auto")`` (or its ``uns["spatialimpute"]``).
    title
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
    """
    plt = _pyplot()

    from .model.auto import ensemble_summary

    table = ensemble_summary(result).sort_values("inner_spcc")
    provenance = result if isinstance(result, dict) else result.uns["spatialimpute"]
    info = provenance["auto"]
    fig, (ax_score, ax_weight) = plt.subplots(1, 2, figsize=(9, 0.45 * len(table) + 1.6), sharey=True)
    y = np.arange(len(table))
    ax_score.barh(y, table["inner_spcc"], color="0.6")
    ax_score.axvline(info["ensemble_inner_spcc"], color="C3", linestyle="--",
                     label=f"ensemble {info['ensemble_inner_spcc']:.3f}")
    smoothing = info.get("smoothing", {})
    if smoothing.get("strength"):
        ax_score.axvline(smoothing["spcc"], color="C2", linestyle=":",
                         label=f"+ smoothing (k={smoothing['neighbors']}, {smoothing['strength']}) {smoothing['spcc']:.3f}")
    ax_score.set_yticks(y, table.index)
    ax_score.set_xlabel("inner-CV Spearman correlation (held-out panel genes)")
    ax_score.legend(fontsize=8, loc="lower right")
    ax_weight.barh(y, table["weight"], color="C0")
    ax_weight.set_xlabel("stacking weight")
    ax_weight.set_xlim(0, 1)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend unless one was chosen."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path) -> None:
    """Save a matplotlib figure to ``path`` atomically and close it."""
    import matplotlib.pyplot as plt

    from ._io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format=str(path).rsplit(".", 1)[-1])
    plt.close(fig)
