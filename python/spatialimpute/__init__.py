"""SpatialImpute: impute the genes an imaging spatial-transcriptomics panel did not measure.

Public API::

    import spatialimpute as si
    out = si.impute(spatial, reference)                 # method="auto"
    model = si.StImpute(spatial, reference); model.train(); out = model.impute()
    res = si.benchmark.cross_validate(spatial, reference, methods=["stimpute", "knn"])
"""

from __future__ import annotations

import importlib

from ._settings import settings
from ._validation import SpatialImputeInputError, SpatialImputeWarning
from ._version import __version__

_LAZY = {
    "AutoImpute": "model.auto",
    "ensemble_summary": "model.auto",
    "StImpute": "model.stimpute",
    "STGNET": "model.stgnet",
    "KNNImpute": "model.knn",
    "MappingImpute": "model.mapping",
    "spatial_order": "data.spatial_order",
    "benchmark": None,
    "datasets": None,
    "plotting": None,
    "reliability": None,
    "io": None,
}

__all__ = ["impute", "settings", "SpatialImputeInputError", "SpatialImputeWarning", "__version__", *_LAZY]


def impute(spatial, reference, method: str = "auto", genes=None, seed: int = 0, device="auto", *, out=None,
           block_size: int | None = None, scheduler=None, dtype: str = "float32", resume: bool = False, **kwargs):
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
        ``"auto"`` (default: the methods chosen, weighted and spatially refined on the data's
        own panel genes by an inner cross-validation, with calibrated reliability and
        per-cell intervals; see :class:`~spatialimpute.model.auto.AutoImpute`),
        ``"stimpute"``, ``"stgnet"``, ``"knn"`` or ``"mapping"``.
    genes
        Genes to impute; default every reference gene the panel lacks. Panel genes listed here
        are held out of the input (for validation).
    seed
        Seed; the same seed on the same device gives the same numbers.
    device
        ``"auto"`` (GPU when present), ``"cpu"`` or ``"cuda[:N]"``.
    out
        ``None`` (result in memory) or a ``.zarr`` path: the result is written block by block
        into an on-disk AnnData store (atomically) and returned with ``X`` as a dask array.
        AnnData input only.
    block_size, scheduler, dtype, resume
        Cells per prediction block, the dask scheduler that runs the blocks (``"threads"``,
        ``"synchronous"``, a ``distributed.Client`` or an address), ``"float32"`` or
        ``"float16"`` values, and resuming an interrupted ``out`` store; see
        :meth:`spatialimpute.model._base.BaseImputer.impute`.
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
        Spatial cells x target genes, log-normalised (``X`` a dask array read from ``out``
        when given); ``var["reliability"]`` holds each gene's
        predicted accuracy in [0, 1], ``uns["spatialimpute"]`` the provenance. For SpatialData
        input: a new SpatialData with that table added as ``result_key``, annotating the same
        element as the cell table (the AnnData itself with ``return_anndata=True``).
    """
    from .io.sdata import impute_spatialdata, is_spatialdata
    from .model.registry import get_method

    def run(spatial, reference, out=None, **kwargs):
        model = get_method(method)(spatial, reference, genes=genes, seed=seed, device=device, **kwargs)
        return model.impute(out, block_size=block_size, scheduler=scheduler, dtype=dtype, resume=resume)

    if is_spatialdata(spatial):
        if out is not None:
            raise SpatialImputeInputError("out", "None for SpatialData input (the result is a new SpatialData)",
                                          repr(str(out)), "write the returned SpatialData with its .write(path)")
        return impute_spatialdata(spatial, reference, impute_fn=run, **kwargs)
    return run(spatial, reference, out, **kwargs)


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'spatialimpute' has no attribute {name!r}")
    target = _LAZY[name]
    module = importlib.import_module(f".{target or name}", __name__)
    return module if target is None else getattr(module, name)
