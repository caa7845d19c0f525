"""Cell labels for conditional models: one shared vocabulary for reference and spatial
cells, and label transfer from the reference to spatial cells on panel genes only."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from . import normalize


def shared_label_codes(
    reference_labels: Sequence, spatial_labels: Sequence | None = None
) -> tuple[list[str], np.ndarray, np.ndarray | None]:
    """Integer-code reference and spatial labels with ONE vocabulary.

    The vocabulary is the reference's categories (its category order for a
    ``pd.Categorical``, otherwise sorted unique values), followed by any spatial-only labels
    (sorted). A spatial label ``"B"`` therefore gets the same code as reference ``"B"`` even
    when the spatial cells hold only a subset of labels (the original's bug re-coded each
    file separately).

    Returns
    -------
    categories, reference_codes, spatial_codes
        Codes are int64; ``spatial_codes`` is ``None`` without spatial labels.
    """
    ref = pd.Series(np.asarray(reference_labels, dtype=object)).astype(str)
    if isinstance(reference_labels, pd.Categorical):
        cats = [str(c) for c in reference_labels.categories]
    else:
        cats = sorted(ref.unique().tolist())
    sp_series = None
    if spatial_labels is not None:
        sp_series = pd.Series(np.asarray(spatial_labels, dtype=object)).astype(str)
        extra = sorted(set(sp_series.unique()) - set(cats))
        cats = cats + extra
    lookup = {c: i for i, c in enumerate(cats)}
    ref_codes = ref.map(lookup).to_numpy(dtype=np.int64)
    sp_codes = sp_series.map(lookup).to_numpy(dtype=np.int64) if sp_series is not None else None
    return cats, ref_codes, sp_codes


def _zscore_rows(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    Z = X - X.mean(axis=1, keepdims=True)
    sd = np.sqrt((Z**2).mean(axis=1, keepdims=True))
    return (Z / np.where(sd > 0, sd, 1.0)).astype(np.float32)


def transfer_labels(
    spatial_X: np.ndarray,
    reference_X: np.ndarray,
    reference_codes: np.ndarray,
    *,
    method: str = "pearson",
    k: int = 15,
    standardize_genes: bool = False,
    chunk_size: int = 2048,
) -> np.ndarray:
    """Give each spatial cell a reference label using shared (panel) genes only.

    Parameters
    ----------
    spatial_X, reference_X
        Log-normalised expression of the SAME panel genes, ``(N_st, G)`` and ``(N_sc, G)``.
        Pass feature genes only: using held-out genes would leak them.
    reference_codes
        Integer label of every reference cell.
    method
        ``"pearson"``: label of the single reference cell with the highest Pearson
        correlation over genes (the original code's rule, vectorised: z-score rows, one
        matrix product, argmax). ``"knn"``: majority vote of the ``k`` most correlated
        reference cells (ties -> smallest code).
    k
        Neighbours for ``"knn"``.
    standardize_genes
        Z-score each gene within each dataset first (removes per-gene shifts and scale
        differences between the two technologies); ``False`` is the original's rule.
    chunk_size
        Spatial cells per block (memory ``chunk_size x N_sc``).

    Returns
    -------
    np.ndarray
        int64 codes ``(N_st,)``. Cells with constant expression get the most frequent
        reference label.
    """
    spatial_X = spatial_X if hasattr(spatial_X, "take_cells") else np.asarray(spatial_X)  # a PanelMatrix is read by chunk
    reference_X = np.asarray(reference_X)
    reference_codes = np.asarray(reference_codes, dtype=np.int64)
    if spatial_X.ndim != 2 or reference_X.ndim != 2 or spatial_X.shape[1] != reference_X.shape[1]:
        raise ValueError(
            "transfer_labels: spatial_X and reference_X must be 2-D with the same genes (columns); "
            f"found {spatial_X.shape} and {reference_X.shape}"
        )
    if reference_codes.shape != (reference_X.shape[0],):
        raise ValueError(
            f"reference_codes: expected shape ({reference_X.shape[0]},); found {reference_codes.shape}"
        )
    if method not in ("pearson", "knn"):
        raise ValueError(f'method: expected "pearson" or "knn"; found {method!r}')
    n_codes = int(reference_codes.max()) + 1
    fallback = int(np.bincount(reference_codes, minlength=n_codes).argmax())
    spatial_scales = None
    if standardize_genes:
        reference_X, spatial_scales = normalize.standardize_genes(reference_X), normalize.gene_scales(spatial_X)
    zr = _zscore_rows(reference_X)
    out = np.empty(spatial_X.shape[0], dtype=np.int64)
    kk = int(min(k, reference_X.shape[0]))
    for start in range(0, spatial_X.shape[0], chunk_size):
        part = np.asarray(spatial_X[start : start + chunk_size])
        zs = _zscore_rows(part if spatial_scales is None else normalize.standardize_genes(part, spatial_scales))
        corr = zs @ zr.T
        if method == "pearson":
            codes = reference_codes[corr.argmax(axis=1)]
        else:
            top = np.argpartition(-corr, kk - 1, axis=1)[:, :kk]
            votes = np.zeros((corr.shape[0], n_codes), dtype=np.int64)
            np.add.at(votes, (np.repeat(np.arange(corr.shape[0]), kk), reference_codes[top].ravel()), 1)
            codes = votes.argmax(axis=1)
        codes[~(zs != 0).any(axis=1)] = fallback  # constant cells
        out[start : start + chunk_size] = codes
    return out
