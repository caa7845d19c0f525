"""SpatialImpute: impute the genes an imaging spatial-transcriptomics panel did not measure.

Public API::

    import spatialimpute as si
    out = si.impute(spatial, reference, method="stimpute")
    model = si.StImpute(spatial, reference); model.train(); out = model.impute()
    res = si.benchmark.cross_validate(spatial, reference, methods=["stimpute", "knn"])
"""

from __future__ import annotations

import importlib

from ._settings import settings
from ._validation import SpatialImputeInputError, SpatialImputeWarning
from ._version import __version__

_LAZY = {
    "StImpute": "model.stimpute",
    "STGNET": "model.stgnet",
    "KNNImpute": "model.knn",
    "benchmark": None,
    "datasets": None,
    "plotting": None,
    "reliability": None,
    "io": None,
}

__all__ = ["impute", "settings", "SpatialImputeInputError", "SpatialImputeWarning", "__version__", *_LAZY]


def impute(spatial, reference, method: str = "stimpute", genes=None, seed: int = 0, device="auto", **kwargs):
    """Impute genes the spatial panel lacks from a scRNA-seq reference, in one call.

    Parameters
    ----------
    spatial
        AnnData, spatial cells x panel genes: raw counts in ``X`` (or ``spatial_layer=``),
        coordinates in ``obsm["spatial"]``, sections in ``obs[sample_key]``; or a
        ``spatialdata.SpatialData`` (see the SpatialData options below).
    reference
        AnnData, reference cells x genes, raw counts in ``X`` (or ``reference_layer=``).
    method
        ``"stimpute"``, ``"stgnet"`` or ``"knn"``.
    genes
        Genes to impute; default every reference gene the panel lacks. Panel genes listed here
        are held out of the input (for validation).
    seed
        Seed; the same seed on the same device gives the same numbers.
    device
        ``"auto"`` (GPU when present), ``"cpu"`` or ``"cuda[:N]"``.
    **kwargs
        Data options (``spatial_layer``, ``reference_layer``, ``spatial_key``, ``labels_key``,
        ``reference_labels_key``, ``library_size_key``, ``sample_key``, ``num_threads``) and
        method hyper-parameters. With SpatialData input also ``table_key`` (the cell table,
        default ``"table"``), ``coordinate_system`` (centroids of the annotated shapes in this
        system; default the table's ``obsm["spatial"]`` when present, else ``"global"``),
        ``result_key`` (name of the new table, default ``"imputed"``) and ``return_anndata``.
        The regions a table annotates are separate sections.

    Returns
    -------
    anndata.AnnData or spatialdata.SpatialData
        Spatial cells x target genes, log-normalised; ``var["reliability"]`` holds each gene's
        predicted accuracy in [0, 1], ``uns["spatialimpute"]`` the provenance. For SpatialData
        input: a new SpatialData with that table added as ``result_key``, annotating the same
        element as the cell table (the AnnData itself with ``return_anndata=True``).
    """
    from .io.sdata import impute_spatialdata, is_spatialdata
    from .model.registry import get_method

    def run(spatial, reference, **kwargs):
        return get_method(method)(spatial, reference, genes=genes, seed=seed, device=device, **kwargs).impute()

    if is_spatialdata(spatial):
        return impute_spatialdata(spatial, reference, impute_fn=run, **kwargs)
    return run(spatial, reference, **kwargs)


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'spatialimpute' has no attribute {name!r}")
    target = _LAZY[name]
    module = importlib.import_module(f".{target or name}", __name__)
    return module if target is None else getattr(module, name)
