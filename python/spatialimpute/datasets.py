"""Synthetic paired tissue (the embedded default) and loaders of real benchmark pairs."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._validation import SpatialImputeInputError
from .data.normalize import log_normalize


def _domains(xy: np.ndarray, n_domains: int, rng: np.random.Generator) -> np.ndarray:
    """Wavy horizontal layers (like cortical layers) over the unit square."""
    phase, amplitude = rng.uniform(0, 2 * np.pi), rng.uniform(0.03, 0.08)
    depth = xy[:, 1] + amplitude * np.sin(2 * np.pi * xy[:, 0] * 1.5 + phase)
    edges = np.quantile(depth, np.linspace(0, 1, n_domains + 1)[1:-1])
    return np.searchsorted(edges, depth)


def _nb_counts(mean: np.ndarray, dispersion: float, rng: np.random.Generator) -> np.ndarray:
    """Negative-binomial counts via the gamma-Poisson mixture (variance mean + mean^2/dispersion)."""
    rate = rng.gamma(shape=dispersion, scale=mean / dispersion)
    return rng.poisson(rate).astype(np.float32)


def simulate_pair(
    n_spatial: int = 2000,
    n_reference: int = 3000,
    n_genes: int = 200,
    n_panel: int = 60,
    n_cell_types: int = 8,
    n_domains: int = 5,
    spatial_depth: float = 150.0,
    reference_depth: float = 1500.0,
    dispersion: float = 4.0,
    dropout: float = 0.3,
    batch_shift: float = 0.5,
    gradient_fraction: float = 0.3,
    seed: int = 0,
):
    """Simulate a spatial panel and a matching scRNA-seq reference with a known truth.

    The tissue has ``n_domains`` wavy layers, each with its own mixture of ``n_cell_types``
    cell types. Gene log-means are a baseline plus cell-type programs (markers) plus, for a
    fraction of genes, smooth spatial gradients. Counts are negative binomial with
    mean-dependent dropout. The reference draws cells from the same programs (at positions
    of the same tissue, as if dissociated), with a different sequencing depth, different type
    proportions and a per-gene capture bias (``batch_shift``, log-scale sd). The spatial
    object holds ``n_panel`` of the genes.

    Parameters
    ----------
    n_spatial, n_reference
        Numbers of spatial and reference cells.
    n_genes, n_panel
        Genes in the reference and in the spatial panel (a subset, always covering markers
        of every cell type).
    n_cell_types, n_domains
        Cell types and spatial domains (layers).
    spatial_depth, reference_depth
        Mean counts per cell over all genes.
    dispersion
        Negative-binomial dispersion (larger = closer to Poisson).
    dropout
        Maximal extra dropout probability (applied mostly to lowly expressed entries).
    batch_shift
        Standard deviation of the per-gene log capture bias of the reference.
    gradient_fraction
        Fraction of genes with a spatial gradient on top of their cell-type program.
    seed
        Random seed.

    Returns
    -------
    spatial : anndata.AnnData
        Spatial cells x panel genes: counts in ``X``, coordinates (micrometres) in
        ``obsm["spatial"]``, ``obs["cell_type"]``, ``obs["domain"]``.
    reference : anndata.AnnData
        Reference cells x all genes: counts in ``X``, ``obs["cell_type"]``.
    truth : anndata.AnnData
        Spatial cells x all genes: ``X`` = log-normalised counts of every gene as the spatial
        assay would have measured them, ``layers["expected"]`` = log1p of the noise-free
        expected expression, ``var["in_panel"]``.
    """
    import anndata

    if n_panel >= n_genes or n_panel < 2:
        raise SpatialImputeInputError("n_panel", f"between 2 and n_genes - 1 ({n_genes - 1})", str(n_panel), "choose a smaller panel")
    if min(n_spatial, n_reference, n_cell_types, n_domains) < 1:
        raise SpatialImputeInputError("n_spatial/n_reference/n_cell_types/n_domains", "positive integers", "a value < 1", "pass positive sizes")
    rng = np.random.default_rng(seed)

    # Gene programs: baseline + type markers + spatial gradients.
    baseline = rng.normal(-1.0, 1.0, n_genes)
    effects = rng.normal(0.0, 0.3, (n_cell_types, n_genes))
    markers_per_type = max(3, n_genes // (2 * n_cell_types))
    marker_of = np.full(n_genes, -1)
    for t in range(n_cell_types):
        genes = rng.choice(n_genes, markers_per_type, replace=False)
        effects[t, genes] += rng.uniform(1.5, 3.0, markers_per_type)
        marker_of[genes] = t
    has_gradient = rng.random(n_genes) < gradient_fraction
    grad_dir = rng.normal(size=(n_genes, 2))
    grad_dir /= np.linalg.norm(grad_dir, axis=1, keepdims=True)
    grad_strength = np.where(has_gradient, rng.uniform(1.0, 2.0, n_genes), 0.0)
    composition = rng.dirichlet(np.full(n_cell_types, 0.4), n_domains)

    def draw_cells(n, type_bias=None):
        xy = rng.random((n, 2))
        domain = _domains(xy, n_domains, rng)
        probs = composition[domain]
        if type_bias is not None:
            probs = probs * type_bias
            probs /= probs.sum(axis=1, keepdims=True)
        cum = probs.cumsum(axis=1)
        types = (rng.random((n, 1)) > cum).sum(axis=1).clip(max=n_cell_types - 1)
        log_mean = baseline + effects[types] + grad_strength * ((xy - 0.5) @ grad_dir.T)
        return xy, domain, types, log_mean

    def to_counts(log_mean, depth, capture):
        rel = np.exp(log_mean + capture)
        size = rng.lognormal(0.0, 0.3, (log_mean.shape[0], 1))
        expected = rel / rel.sum(axis=1, keepdims=True) * depth * size
        counts = _nb_counts(expected, dispersion, rng)
        drop = rng.random(counts.shape) < dropout * np.exp(-expected)
        counts[drop] = 0
        return counts, expected

    xy, domain, types, log_mean = draw_cells(n_spatial)
    sp_counts, sp_expected = to_counts(log_mean, spatial_depth, 0.0)
    _, _, ref_types, ref_log_mean = draw_cells(n_reference, type_bias=rng.uniform(0.5, 2.0, n_cell_types))
    ref_counts, _ = to_counts(ref_log_mean, reference_depth, rng.normal(0.0, batch_shift, n_genes))

    must = [rng.choice(np.flatnonzero(marker_of == t), 2, replace=False) for t in range(n_cell_types) if (marker_of == t).sum() >= 2]
    must = np.unique(np.concatenate(must))[: n_panel] if must else np.array([], dtype=int)
    rest = rng.permutation(np.setdiff1d(np.arange(n_genes), must))[: n_panel - must.size]
    panel = np.sort(np.concatenate([must, rest]).astype(int))

    gene_names = pd.Index([f"Gene{i:04d}" for i in range(n_genes)])
    type_names = np.array([f"type_{t}" for t in range(n_cell_types)])
    coords = xy * 1000.0
    sp_obs = pd.DataFrame(
        {"cell_type": pd.Categorical(type_names[types], categories=type_names),
         "domain": pd.Categorical([f"layer_{d}" for d in domain]),
         "x": coords[:, 0], "y": coords[:, 1]},
        index=pd.Index([f"spot_{i:05d}" for i in range(n_spatial)]),
    )
    spatial = anndata.AnnData(X=sp_counts[:, panel], obs=sp_obs, var=pd.DataFrame(index=gene_names[panel]))
    spatial.obsm["spatial"] = coords
    reference = anndata.AnnData(
        X=ref_counts,
        obs=pd.DataFrame({"cell_type": pd.Categorical(type_names[ref_types], categories=type_names)},
                         index=pd.Index([f"ref_{i:05d}" for i in range(n_reference)])),
        var=pd.DataFrame(index=gene_names),
    )
    truth = anndata.AnnData(
        X=log_normalize(sp_counts),
        obs=sp_obs.copy(),
        var=pd.DataFrame({"in_panel": np.isin(np.arange(n_genes), panel),
                          "spatial_gradient": has_gradient}, index=gene_names),
    )
    truth.layers["expected"] = np.log1p(sp_expected).astype(np.float32)
    truth.obsm["spatial"] = coords.copy()
    return spatial, reference, truth
