"""Read and write ``.rds`` files holding R single-cell objects (optional extra ``[r]``).

Supported objects: ``SingleCellExperiment``, ``SpatialExperiment`` (handled as a
SingleCellExperiment whose coordinates travel as a ``spatial`` reducedDim) and ``Seurat``
(converted to a SingleCellExperiment in R first; coordinates from its FOV centroids). The
R -> AnnData step uses ``anndata2ri``. Both directions run the R package ``SpatialImpute``'s
own functions (one implementation of each step): its reading of the object (assay,
coordinates, sections) and its attachment of the result to the original object:

- SingleCellExperiment / SpatialExperiment: ``altExp(x, name)``, a SummarizedExperiment
  with assay ``logcounts`` (genes x cells) and, when the result has them (``method="auto"``),
  assays ``lower`` / ``upper`` (the per-cell prediction interval), every per-gene column of
  ``var`` in ``rowData`` (``reliability``, ``in_panel``, ``reliability_lower``,
  ``reliability_upper``, ``reliability_<member>``) and the run's provenance (for ``auto``
  what the ensemble chose, ``provenance$auto``) in ``metadata(...)$imputeSpatial``. The object keeps its class (a
  SpatialExperiment stays one when the R package SpatialExperiment is installed; otherwise
  it is written as a SingleCellExperiment with a ``spatial`` reducedDim).
- Seurat: a new assay ``name`` (imputed values in ``data``), the per-gene columns in the
  assay's feature meta data, the per-cell interval as assays ``<name>_lower`` and
  ``<name>_upper`` (values in ``data``), provenance in ``seu@tools$imputeSpatial[[name]]``.

Requires R (>= 4.1) with the R package SpatialImpute (``R CMD INSTALL rpkg``) and
SingleCellExperiment (and SeuratObject for Seurat files), and the Python packages ``rpy2==3.5.17`` and ``anndata2ri==2.0.1`` (``pip install
'spatialimpute[r]'``). Do not use this module from a Python embedded in R by reticulate:
starting rpy2 there crashes R. R users call ``SpatialImpute::imputeSpatial()`` instead.

Examples
--------
>>> from spatialimpute import rbridge, impute  # doctest: +SKIP
>>> spatial, info = rbridge.read_rds("spatial.rds")  # doctest: +SKIP
>>> reference, _ = rbridge.read_rds("reference.rds")  # doctest: +SKIP
>>> result = impute(spatial, reference, method="knn")  # doctest: +SKIP
>>> rbridge.write_rds(result, info, "imputed.rds")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ._validation import SpatialImputeInputError

__all__ = ["read_rds", "write_rds", "is_available"]

_STATE: dict = {}


def is_available() -> bool:
    """Whether the R bridge can be used here (rpy2 and anndata2ri import, not inside R).

    Returns
    -------
    bool
    """
    if _embedded_in_r():
        return False
    try:
        import anndata2ri  # noqa: F401
        import rpy2.robjects  # noqa: F401
    except Exception:  # rpy2 raises various errors when R itself is missing
        return False
    return True


def _embedded_in_r() -> bool:
    # reticulate imports its helper module 'rpycall' into the Python it embeds in R.
    return "rpycall" in sys.modules


def _r():
    """The rpy2 robjects module and the R package SpatialImpute's bridge functions."""
    if _embedded_in_r():
        raise RuntimeError(
            "spatialimpute.rbridge cannot be used from Python running inside R (reticulate): "
            "starting rpy2 there crashes R. In R, call SpatialImpute::imputeSpatial() on the "
            "objects directly."
        )
    if "helpers" in _STATE:
        return _STATE["ro"], _STATE["helpers"]
    try:
        import rpy2.robjects as ro
    except Exception as err:  # ImportError, or rpy2's own errors when R is missing
        raise ImportError(
            "Reading and writing .rds files needs R (>= 4.1) with the R package SpatialImpute, and the "
            "Python packages rpy2==3.5.17 and anndata2ri==2.0.1: pip install 'spatialimpute[r]' (R headers, "
            f"e.g. r-base-dev, are needed to build rpy2). Import failed with: {err}"
        ) from err
    try:
        # (rpy2 returns None for invisible R values: wrap in isTRUE())
        ok = bool(ro.r("isTRUE(suppressPackageStartupMessages("
                       "requireNamespace('SpatialImpute', quietly = TRUE)))")[0])
    except Exception as err:  # pragma: no cover - R broken
        raise ImportError(f"R could not be started through rpy2: {err}") from err
    if not ok:
        raise ImportError(
            "Reading and writing .rds files uses the R package SpatialImpute, which is not installed in "
            "this R: install it from the source tree with `R CMD INSTALL rpkg` (or `make r-install`). It "
            "needs SingleCellExperiment (Bioconductor, or apt: r-bioc-singlecellexperiment)."
        )
    helpers = {"read": ro.r("SpatialImpute:::.rds_for_python"), "write": ro.r("SpatialImpute:::.write_imputed_rds")}
    _STATE["ro"], _STATE["helpers"] = ro, helpers
    return ro, helpers


def _r_call(fn, *args, what: str):
    """Call an R function; R errors become SpatialImputeInputError with R's message."""
    from rpy2.rinterface_lib.embedded import RRuntimeError

    try:
        return fn(*args)
    except RRuntimeError as err:
        message = re.sub(r"^Error(?: in .*?)?:\s*", "", str(err).strip(), count=1, flags=re.S)
        raise SpatialImputeInputError(what, "an .rds file with a supported R object", message,
                                      "save a SingleCellExperiment, SpatialExperiment or Seurat "
                                      "object with saveRDS()") from err


def read_rds(path, assay: str | None = None):
    """Read an ``.rds`` file holding a SingleCellExperiment, SpatialExperiment or Seurat object.

    Parameters
    ----------
    path
        Path of the ``.rds`` file.
    assay
        Assay (Seurat: layer of the default assay) that becomes ``X``. Default: ``"counts"``
        when present, else the first assay.

    Returns
    -------
    adata : anndata.AnnData
        Cells x genes; ``X`` = the assay, ``obs``/``var`` = the atomic columns of the cell and
        gene metadata, ``obsm["spatial"]`` = the coordinates (SpatialExperiment
        ``spatialCoords``, a ``spatial`` reducedDim, or the Seurat images' centroids) when present,
        ``obs["sample_id"]`` the section of each cell (SpatialExperiment ``sample_id``, or the
        image of a Seurat object with several; pass ``sample_key="sample_id"`` to impute).
    info : dict
        What :func:`write_rds` needs to rebuild an object of the same kind: ``path`` (absolute),
        ``kind`` (``"SingleCellExperiment"``, ``"SpatialExperiment"``, ``"Seurat"`` or
        ``"SummarizedExperiment"``), ``class``, ``assay``, ``coords`` (where the coordinates
        came from, or None), ``n_cells``, ``cell_names`` (the obs names).

    Raises
    ------
    SpatialImputeInputError
        The file is missing or does not hold a supported object.
    ImportError
        rpy2 / anndata2ri / R / SingleCellExperiment are not available.
    """
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise SpatialImputeInputError("path", "an existing .rds file", repr(str(path)), "check the path")
    ro, helpers = _r()
    import anndata2ri
    from rpy2.robjects.conversion import get_conversion, localconverter

    # The R object stays in R (an object whose class package is missing must not reach rpy2).
    res = _r_call(helpers["read"], str(path), assay or "",
                  what="assay" if assay is not None else "path")
    sce = res.rx2("sce")
    with localconverter(anndata2ri.converter):
        adata = get_conversion().rpy2py(sce)
    if "spatial" in adata.obsm:
        adata.obsm["spatial"] = np.asarray(adata.obsm["spatial"], dtype=np.float64)
    # anndata2ri turns logical columns into integers: restore them.
    for col in res.rx2("logical_cols"):
        if col in adata.obs:
            adata.obs[col] = adata.obs[col].astype(bool)
    if sp.issparse(adata.X):
        adata.X = sp.csr_matrix(adata.X)
    coords = res.rx2("coords")[0]
    info = {
        "path": str(path),
        "kind": str(res.rx2("kind")[0]),
        "class": str(res.rx2("class")[0]),
        "assay": str(res.rx2("assay")[0]),
        "coords": None if coords is ro.NA_Character or str(coords) == "NA" else str(coords),
        "n_cells": int(adata.n_obs),
        "cell_names": [str(c) for c in adata.obs_names],
    }
    return adata, info


def _plain(obj):
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


def write_rds(result, info: dict, path, name: str = "imputed") -> None:
    """Write the original R object of ``info`` with the imputed genes of ``result`` added.

    The original object is read again from ``info["path"]`` and gets the imputed genes the
    way the R package does it (see the module docstring); the file is written atomically
    (temporary file + rename), so ``path`` may be the input file itself.

    Parameters
    ----------
    result
        AnnData returned by :func:`spatialimpute.impute` (cells = the spatial cells of the
        original object, same order).
    info
        The ``info`` dict returned by :func:`read_rds` for the spatial object.
    path
        Output ``.rds`` path.
    name
        altExp name (SingleCellExperiment / SpatialExperiment) or assay name (Seurat).

    Raises
    ------
    SpatialImputeInputError
        ``result`` does not match the original object's cells, or ``info`` is not from
        :func:`read_rds`.
    """
    import anndata

    if not isinstance(result, anndata.AnnData):
        raise SpatialImputeInputError("result", "the AnnData returned by spatialimpute.impute",
                                      type(result).__name__, "pass the imputation result")
    if not isinstance(info, dict) or "path" not in info or "kind" not in info:
        raise SpatialImputeInputError("info", "the info dict returned by read_rds", repr(type(info).__name__),
                                      "read the spatial object with rbridge.read_rds first")
    cells = [str(c) for c in result.obs_names]
    if cells != list(info.get("cell_names", cells)):
        raise SpatialImputeInputError(
            "result", f"the {info.get('n_cells')} cells of {info['path']} in the same order",
            f"{result.n_obs} cells that differ", "impute on the object read from that file, without subsetting")
    if not isinstance(name, str) or not name:
        raise SpatialImputeInputError("name", "a non-empty string", repr(name), 'use name="imputed"')
    ro, helpers = _r()
    original = Path(info["path"])
    if not original.is_file():
        raise SpatialImputeInputError("info", "the original .rds file to still exist", repr(str(original)),
                                      "write the result before moving the input file")

    mat = _to_r_matrix(ro, result.X)
    genes = ro.StrVector([str(g) for g in result.var_names])
    if "reliability" in result.var:
        reliability = _numpy_to_r(ro, np.asarray(result.var["reliability"], dtype=np.float64))
    else:
        reliability = ro.FloatVector(np.full(result.n_vars, np.nan))
    in_panel = (ro.BoolVector([bool(v) for v in result.var["in_panel"]])
                if "in_panel" in result.var else ro.BoolVector([]))
    row_data = _var_to_r(ro, result.var)
    layers = ro.ListVector({name_: _to_r_matrix(ro, result.layers[name_])
                            for name_ in ("lower", "upper") if name_ in result.layers})
    provenance = result.uns.get("spatialimpute", {})
    params_json = json.dumps({"method": provenance.get("method"), "provenance": provenance,
                              "source": "spatialimpute.rbridge", "assay.type": info.get("assay"),
                              "coords": info.get("coords")},
                             default=_plain)
    path = Path(path).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        _r_call(helpers["write"], str(original), tmp, mat, genes, reliability, in_panel, params_json, name,
                row_data, layers, what="result")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _var_to_r(ro, var):
    """Every column of ``var`` as a named R list of vectors (numbers as double, booleans as logical,
    anything else as character), in the order of ``var``."""
    columns = {}
    for col in var.columns:
        values = var[col]
        kind = values.dtype.kind
        if kind == "b":
            columns[str(col)] = ro.BoolVector([bool(v) for v in values])
        elif kind in "iuf":
            columns[str(col)] = _numpy_to_r(ro, np.asarray(values, dtype=np.float64))
        else:
            columns[str(col)] = ro.StrVector([str(v) for v in values])
    return ro.ListVector(columns)


def _numpy_to_r(ro, array):
    """A 1-D numpy array as an R vector (bulk copy through rpy2's numpy converter)."""
    from rpy2.robjects import numpy2ri
    from rpy2.robjects.conversion import get_conversion, localconverter

    with localconverter(ro.default_converter + numpy2ri.converter):
        return get_conversion().py2rpy(np.ascontiguousarray(array))


def _to_r_matrix(ro, X):
    """A cells x genes matrix (numpy or scipy) as an R genes x cells double matrix/dgCMatrix."""
    if sp.issparse(X):
        csr = sp.csr_matrix(X, dtype=np.float64)  # rows = cells -> CSC of the transpose
        csr.sort_indices()
        n_cells, n_genes = csr.shape
        build = ro.r("function(i, p, x, d) Matrix::sparseMatrix(i = i, p = p, x = x, dims = d, "
                     "index1 = FALSE, repr = 'C')")
        return build(_numpy_to_r(ro, csr.indices.astype(np.int32)), _numpy_to_r(ro, csr.indptr.astype(np.int32)),
                     _numpy_to_r(ro, csr.data), ro.IntVector([n_genes, n_cells]))
    dense = np.asarray(X, dtype=np.float64)
    n_cells, n_genes = dense.shape
    # Column-major genes x cells == row-major cells x genes.
    return ro.r["matrix"](_numpy_to_r(ro, dense.ravel(order="C")), nrow=n_genes, ncol=n_cells)
