"""Writing an imputation result in the format its input came in."""

from __future__ import annotations

import logging
from pathlib import Path

from .._io import atomic_path, write_h5ad
from .._validation import SpatialImputeInputError
from .read import SpatialInput

#: Output suffixes :func:`write_result` knows.
SUFFIXES = (".h5ad", ".rds", ".zarr")


def write_result(result, path, source: SpatialInput | None = None, *, name: str = "imputed") -> Path:
    """Write ``result`` atomically to ``path`` (``.h5ad``, ``.rds`` or ``.zarr``).

    Parameters
    ----------
    result
        AnnData (or the SpatialData returned for SpatialData input).
    path
        Output path; its suffix picks the format. ``.rds`` needs an ``.rds`` input (the
        imputed genes are added to that R object); ``.zarr`` writes a SpatialData store
        (``result`` itself, or a store holding the AnnData as table ``name``).
    source
        What :func:`spatialimpute.io.read_spatial` read (needed for ``.rds``).
    name
        altExp / assay name (``.rds``) or table name (``.zarr`` from AnnData).

    Returns
    -------
    pathlib.Path
    """
    from .sdata import is_spatialdata

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise SpatialImputeInputError("out", f"a path ending in {', '.join(SUFFIXES)}", repr(str(path)),
                                      "e.g. imputed.h5ad")
    if suffix == ".zarr":
        from .read import _spatialdata

        _spatialdata()
        from spatialdata import SpatialData
        from spatialdata.models import TableModel

        sdata = result if is_spatialdata(result) else SpatialData(tables={name: TableModel.parse(result.copy())})
        logger = logging.getLogger("spatialdata._logging")  # (it reports the temporary path as the store's)
        level = logger.level
        logger.setLevel(logging.WARNING)
        try:
            with atomic_path(path) as tmp:
                sdata.write(tmp)
        finally:
            logger.setLevel(level)
        return path
    if is_spatialdata(result):
        raise SpatialImputeInputError("out", "a .zarr path for a SpatialData result", repr(str(path)),
                                      "write .zarr, or impute with return_anndata=True")
    if suffix == ".rds":
        from .. import rbridge

        if source is None or source.rds_info is None:
            raise SpatialImputeInputError("out", "an .h5ad or .zarr path unless the spatial input is an .rds file",
                                          repr(str(path)), "write .rds only when the spatial input is an .rds file")
        rbridge.write_rds(result, source.rds_info, path, name=name)
        return path
    write_h5ad(result, path)
    return path
