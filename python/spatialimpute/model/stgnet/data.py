"""STGNET's data preparation: the gene image layout, the [0, 1] scales and their inverse,
the spatial-to-reference alignment, the labels, and the stage-2 targets.

Everything here is NumPy on the host, computed once per model; the networks read the
result as images (:func:`spatialimpute.module.stgnet.to_images`).
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import torch

from ..._settings import derive_seed
from ...data.labels import shared_label_codes, transfer_labels
from ...data.neighbors import knn_cosine, weighted_neighbor_mean
from ...data.normalize import gene_scales, row_chunks, standardize_genes
from ...module import stgnet as S
from .config import STGNETArchitecture

__all__ = [
    "Labels", "Prepared", "QuantileMap", "SpatialRows", "match_quantiles", "prepare", "reference_sample", "row_sample",
    "settle_labels", "smoothed_targets", "stgnet_scale", "stgnet_unscale", "unscale",
]


def stgnet_scale(counts: np.ndarray, library_size: np.ndarray, max_cols: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """STGNET's original input scale: CP10k, log1p, divided by the per-cell maximum.

    Parameters
    ----------
    counts
        Cells x genes raw values.
    library_size
        Per-cell library size (over all genes of the object).
    max_cols
        Columns the per-cell maximum is taken over (default all).

    Returns
    -------
    scaled, cell_max
        Scaled values (float32; may exceed 1 outside ``max_cols``) and the per-cell maximum
        of ``log1p(CP10k)`` (1 where a cell has nothing, to avoid division by zero).
    """
    lib = np.asarray(library_size, dtype=np.float64)
    lib = np.where(lib > 0, lib, 1.0)
    logn = np.log1p(np.asarray(counts, dtype=np.float64) / lib[:, None] * 1e4)
    sub = logn if max_cols is None else logn[:, max_cols]
    cell_max = sub.max(axis=1) if sub.shape[1] else np.ones(logn.shape[0])
    cell_max = np.where(cell_max > 0, cell_max, 1.0)
    return (logn / cell_max[:, None]).astype(np.float32), cell_max


def stgnet_unscale(values: np.ndarray, cell_max: np.ndarray, median_library_size: float) -> np.ndarray:
    """Map values on STGNET's per-cell scale back to the project's log-normalised scale
    (``log1p(counts / library size * median library size)``)."""
    logn = np.asarray(values, dtype=np.float64) * cell_max[:, None]
    return np.log1p(np.expm1(np.clip(logn, 0.0, None)) * (median_library_size / 1e4)).astype(np.float32)


class QuantileMap:
    """Per-gene monotone maps of spatial values onto the reference's distribution of each gene.

    Fitted on a set of spatial values (:meth:`fit`); a value of average rank ``r`` among
    the ``n`` fitted values of its gene becomes the ``(r - 1/2) / n`` quantile of the
    reference column of that gene (linear between order statistics, as ``np.quantile``).
    Values not among the fitted ones are ranked by where they fall among them, so any
    block of cells maps with one fitted map; on the fitted values themselves this is
    :func:`match_quantiles`.
    """

    def __init__(self, fitted: np.ndarray, reference: np.ndarray) -> None:
        self.sorted = np.sort(np.asarray(fitted, dtype=np.float64), axis=0)
        self.reference_sorted = np.sort(np.asarray(reference, dtype=np.float64), axis=0)

    @classmethod
    def fit(cls, values: np.ndarray, reference: np.ndarray) -> "QuantileMap":
        """Fit on ``(N, G)`` spatial ``values``, onto the ``(M, G)`` ``reference`` values of the same genes."""
        return cls(values, reference)

    def apply(self, values: np.ndarray) -> np.ndarray:
        """``(N, G)`` float32: ``values`` mapped gene by gene."""
        values = np.asarray(values, dtype=np.float64)
        n, m = max(self.sorted.shape[0], 1), self.reference_sorted.shape[0]
        out = np.empty(values.shape, dtype=np.float32)
        for j in range(values.shape[1]):
            column = self.sorted[:, j]
            below = np.searchsorted(column, values[:, j], side="left")
            through = np.searchsorted(column, values[:, j], side="right")
            rank = 0.5 * (below + through + 1)  # the average rank of ties, as scipy's rankdata
            position = (rank - 0.5) / n * (m - 1)
            low = np.floor(position).astype(np.int64)
            high = np.minimum(low + 1, m - 1)
            reference = self.reference_sorted[:, j]
            out[:, j] = reference[low] + (reference[high] - reference[low]) * (position - low)
        return out


def match_quantiles(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Map each column of ``values`` onto the distribution of the same column of ``reference``.

    A value of rank ``r`` (average rank for ties) among ``n`` cells becomes the
    ``(r - 1/2) / n`` quantile of the reference column: a per-gene monotone map, so every
    gene keeps its cell ranking while its marginal distribution becomes the reference's.

    Parameters
    ----------
    values
        ``(N, G)`` spatial values.
    reference
        ``(M, G)`` reference values of the same genes.

    Returns
    -------
    np.ndarray
        ``(N, G)`` float32.
    """
    return QuantileMap.fit(values, reference).apply(values)


@dataclasses.dataclass
class SpatialRows:
    """Some spatial cells' panel genes on the networks' scale (panel columns in the paired
    data's feature order; the images place them at ``Prepared.feature_pos``)."""

    values: np.ndarray  #: (cells, panel genes) what the images show
    inputs: np.ndarray | None  #: what the networks read instead (None: ``values``)
    cell_max: np.ndarray | None  #: ``input_scale="cell_max"``: each cell's maximum


@dataclasses.dataclass
class Prepared:
    """What both data sets need on the networks' scale, in the gene image layout.

    Image columns hold the panel and target genes sorted by name (the layout does not
    depend on which genes a fold holds out); ``feature_pos`` / ``target_pos`` are the
    columns of the panel genes and of the genes to impute. The reference's panel genes are
    prepared for every cell (what the spatial values are aligned to); the reference cells
    stages 1-2 train on are scaled when they train (:func:`reference_sample`); spatial
    cells are prepared for any block of them (:meth:`spatial_rows`) from what was fitted
    on all of them (or a sample): the gene scales and the quantile map.
    """

    genes: list[str]
    feature_pos: np.ndarray
    target_pos: np.ndarray
    side: int
    reference_panel: np.ndarray  #: (every reference cell, panel genes) on the networks' scale
    gene_max: np.ndarray | None  #: ``input_scale="gene_max"``: each gene's reference maximum
    median_library_size: float
    coords01: np.ndarray  #: coordinates min-max scaled per axis
    spatial_scales: tuple[np.ndarray, np.ndarray] | None  #: ``network_input="standardized"``: panel gene scales
    alignment: QuantileMap | None  #: ``spatial_alignment="quantile"``: fitted on the sample's panel genes

    @property
    def n_genes(self) -> int:
        return len(self.genes)

    @property
    def layout(self) -> np.ndarray:
        """The paired data's gene columns (panel genes, then targets) in image order."""
        return np.argsort(np.concatenate([self.feature_pos, self.target_pos]))

    def spatial_rows(self, paired, cells: np.ndarray) -> SpatialRows:
        """The spatial cells ``cells`` (indices) on the networks' scale."""
        scaled, cell_max = _scaled_panel(paired, cells, self.gene_max, self.feature_pos)
        values = np.asarray(scaled if self.alignment is None else self.alignment.apply(scaled), dtype=np.float32)
        inputs = None
        if self.spatial_scales is not None:
            inputs = standardize_genes(paired.spatial_X[cells], self.spatial_scales)
        return SpatialRows(values, inputs, cell_max)


def _scaled_panel(paired, cells: np.ndarray, gene_max: np.ndarray | None, feature_pos: np.ndarray):
    """The panel of ``cells`` over each gene's reference maximum (``gene_max``) or on
    :func:`stgnet_scale` (``None``), and the cells' maxima (``None`` for ``gene_max``)."""
    if gene_max is not None:
        return paired.spatial_X[cells] / gene_max[feature_pos], None
    return stgnet_scale(paired.spatial_counts[cells], paired.spatial_library_size[cells])


def prepare(paired, arch: STGNETArchitecture, sample: np.ndarray) -> Prepared:
    """Scale every reference cell's panel genes, lay out the genes, scale the coordinates,
    and fit the spatial gene scales (all cells) and quantile map (the spatial cells ``sample``).

    Every scale is fitted on the whole reference (each gene's maximum), so a cell's values
    do not depend on which cells are sampled.
    """
    p = paired
    genes = list(p.feature_genes) + list(p.target_genes)
    order = np.argsort(np.asarray(genes, dtype=object), kind="stable")  # fold-invariant image layout
    pos = np.empty(len(genes), dtype=np.int64)
    pos[order] = np.arange(len(genes))
    feature_pos, target_pos = pos[: p.n_features], pos[p.n_features:]
    gene_max = None
    if arch.input_scale == "gene_max":
        gene_max = p.reference_X.max(axis=0).astype(np.float64)
        gene_max = np.where(gene_max > 0, gene_max, 1.0)
        reference_panel = (p.reference_features / gene_max[: p.n_features]).astype(np.float32)
        gene_max = gene_max[order]
    else:
        reference_panel = np.empty((p.n_reference, p.n_features), dtype=np.float32)
        for c in row_chunks(p.reference_counts):  # a cell's scale is its maximum over every gene
            reference_panel[c] = stgnet_scale(p.reference_counts[c], p.reference_library_size[c])[0][:, : p.n_features]
    alignment = None
    if arch.spatial_alignment == "quantile":
        alignment = QuantileMap.fit(_scaled_panel(p, sample, gene_max, feature_pos)[0], reference_panel)
    spatial_scales = gene_scales(p.spatial_X) if arch.network_input == "standardized" else None
    coords = np.asarray(p.coords, dtype=np.float64)
    span = coords.max(axis=0) - coords.min(axis=0)
    coords01 = ((coords - coords.min(axis=0)) / np.where(span > 0, span, 1.0)).astype(np.float32)
    return Prepared(
        genes=[genes[i] for i in order], feature_pos=feature_pos, target_pos=target_pos, side=S.image_side(len(genes)),
        reference_panel=reference_panel, gene_max=gene_max,
        median_library_size=float(np.median(np.where(p.spatial_library_size > 0, p.spatial_library_size, 1.0))),
        coords01=coords01, spatial_scales=spatial_scales, alignment=alignment,
    )


def reference_sample(paired, data: Prepared, arch: STGNETArchitecture,
                     rows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """The reference cells ``rows`` on the networks' scale in the image layout (what stages
    1-2 train on, in [0, 1]) and what the networks read instead (``network_input=
    "standardized"``: each gene's z-scores over the whole reference; else None), filled in
    row chunks."""
    p, order = paired, data.layout
    reference = np.empty((rows.size, data.n_genes), dtype=np.float32)
    for c in row_chunks(reference):
        if data.gene_max is not None:
            reference[c] = p.reference_X[np.ix_(rows[c], order)] / data.gene_max
        else:  # a cell's scale is its maximum over every gene
            reference[c] = stgnet_scale(p.reference_counts[rows[c]], p.reference_library_size[rows[c]])[0][:, order]
    inputs = None
    if arch.network_input == "standardized":
        mean, inverse_sd = gene_scales(p.reference_X)
        inputs = np.empty_like(reference)
        for c in row_chunks(inputs):
            inputs[c] = (p.reference_X[np.ix_(rows[c], order)] - mean[order]) * inverse_sd[order]
    return reference, inputs


def align(values: np.ndarray, reference: np.ndarray, mode: str) -> np.ndarray:
    """Spatial ``values`` on the scale of the ``reference`` columns of the same genes
    (``"quantile"``: :func:`match_quantiles`) or unchanged (``"none"``)."""
    return match_quantiles(values, reference) if mode == "quantile" else values


def unscale(values: np.ndarray, positions: np.ndarray, data: Prepared, cell_max: np.ndarray | None) -> np.ndarray:
    """Network scale -> log-normalised scale for the genes at image ``positions``.

    ``input_scale="gene_max"``: times each gene's reference maximum; ``"cell_max"``: the
    inverse of :func:`stgnet_scale` with each cell's maximum ``cell_max``.
    """
    if data.gene_max is not None:
        return (np.clip(values, 0.0, None) * data.gene_max[positions]).astype(np.float32)
    return stgnet_unscale(values, cell_max, data.median_library_size)


@dataclasses.dataclass
class Labels:
    """One label vocabulary for both data sets and each cell's code in it."""

    categories: list[str]
    reference_codes: np.ndarray
    spatial_codes: np.ndarray
    source: dict


def settle_labels(paired, arch: STGNETArchitecture, seed: int) -> Labels:
    """Given labels (one shared vocabulary), one class, or Leiden clusters of the reference;
    spatial labels, when not given, transferred from the reference on panel genes only."""
    p = paired
    sp_source = "given"
    if p.reference_labels is not None:
        cats, ref_codes, sp_codes = shared_label_codes(
            p.reference_labels, None if p.spatial_labels is None else np.asarray(p.spatial_labels)
        )
        if sp_codes is not None and (sp_codes >= len(p.reference_labels.categories)).any():
            warnings.warn("STGNET: some spatial labels are absent from the reference; their cells are "
                          "conditioned on labels no reference cell has", stacklevel=4)
        source = "given"
    elif arch.unlabelled == "single":
        cats, ref_codes = ["all"], np.zeros(p.n_reference, dtype=np.int64)
        sp_codes = np.zeros(p.n_cells, dtype=np.int64)
        source = sp_source = "single class (no labels given)"
    else:
        from ...data.clustering import leiden

        ref_codes = leiden(p.reference_X, resolution=arch.leiden_resolution, seed=seed)
        cats = [str(i) for i in range(int(ref_codes.max()) + 1)]
        sp_codes = None
        source = "leiden"
    if sp_codes is None:
        sp_codes = transfer_labels(p.spatial_X, p.reference_features, ref_codes, method=arch.label_transfer,
                                   k=arch.label_transfer_k, standardize_genes=arch.label_transfer_standardize)
        sp_source = f"transferred ({arch.label_transfer}, panel genes only)"
    return Labels(list(cats), np.asarray(ref_codes, dtype=np.int64), np.asarray(sp_codes, dtype=np.int64),
                  {"reference": source, "spatial": sp_source, "n_labels": len(cats)})


def row_sample(n_rows: int, cap: int | None, seed: int, name: str) -> np.ndarray:
    """Rows a stage trains on: all ``n_rows``, or a random ``cap`` of them (sorted), drawn
    from the stream ``name`` of ``seed``."""
    if cap is None or n_rows <= cap:
        return np.arange(n_rows)
    rng = np.random.default_rng(derive_seed(seed, name))
    return np.sort(rng.choice(n_rows, cap, replace=False))


def smoothed_targets(reference_X: np.ndarray, reference: np.ndarray, k: int, seed: int, device) -> np.ndarray:
    """Each reference cell's mean of ``reference`` (network scale) over its ``k`` nearest
    reference cells, itself included (cosine in 30 principal components of all genes of
    ``reference_X``, z-scored): stage 2's denoised regression targets."""
    from sklearn.decomposition import PCA

    z = standardize_genes(reference_X)
    n_components = min(30, z.shape[0] - 1, z.shape[1])
    emb = z
    if n_components < z.shape[1]:
        emb = PCA(n_components=n_components, random_state=derive_seed(seed, "s2_targets")).fit_transform(z)
    idx, _ = knn_cosine(emb, emb, min(k, emb.shape[0]), device=device)
    weights = torch.full(idx.shape, 1.0 / idx.shape[1], device=device)
    return weighted_neighbor_mean(idx, weights, torch.as_tensor(reference, device=device)).cpu().numpy()
