"""One entry point that reads spatial data in any supported layout."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .._validation import SpatialImputeInputError

#: Platform output folders read through ``spatialdata-io``, and the file that marks each.
PLATFORMS = {
    "xenium": "experiment.xenium",
    "merscope": "cell_by_gene.csv",
    "cosmx": "*_exprMat_file.csv",
}


@dataclass
class SpatialInput:
    """What :func:`read_spatial` read.

    Attributes
    ----------
    data
        ``anndata.AnnData`` (``.h5ad``, ``.rds``) or ``spatialdata.SpatialData`` (``.zarr``
        store, platform folder).
    kind
        ``"h5ad"``, ``"rds"``, ``"zarr"`` or the platform name.
    path
        The path read.
    rds_info
        For ``.rds`` input, what :func:`spatialimpute.rbridge.write_rds` needs; else ``None``.
    """

    data: object
    kind: str
    path: Path
    rds_info: dict | None = None


def detect_platform(path) -> str | None:
    """The platform whose output folder ``path`` is (see :data:`PLATFORMS`), or ``None``."""
    path = Path(path)
    if not path.is_dir():
        return None
    found = [name for name, marker in PLATFORMS.items() if any(path.glob(marker))]
    return found[0] if len(found) == 1 else None


def read_spatial(path, platform: str | None = None, *, assay: str | None = None) -> SpatialInput:
    """Read spatial data from a file, a SpatialData store or a platform output folder.

    Parameters
    ----------
    path
        ``.h5ad`` file, ``.rds`` file (SingleCellExperiment / SpatialExperiment / Seurat;
        extra ``[r]``), SpatialData ``.zarr`` store, or a Xenium, MERSCOPE or CosMx output
        folder (extra ``[spatialdata]``).
    platform
        ``"xenium"``, ``"merscope"`` or ``"cosmx"`` for a folder; default: recognised from the
        files in it (:data:`PLATFORMS`).
    assay
        For ``.rds`` input: the assay (Seurat layer) of raw counts.

    Returns
    -------
    SpatialInput
        Platform folders are read as SpatialData with the cell table and the cell shapes or
        circles only (images, labels and transcripts are not needed for imputation).
    """
    p = Path(path).expanduser()
    if platform is not None and platform not in PLATFORMS:
        raise SpatialImputeInputError("platform", f"one of {sorted(PLATFORMS)} or None", repr(platform),
                                      "name the instrument that wrote the folder, or let it be recognised")
    if not p.exists():
        raise SpatialImputeInputError("path", "an existing file or folder", repr(str(path)), "check the path")
    suffix = p.suffix.lower()
    if p.is_file() and suffix == ".h5ad":
        import anndata

        return SpatialInput(anndata.read_h5ad(p), "h5ad", p)
    if p.is_file() and suffix == ".rds":
        from .. import rbridge

        adata, info = rbridge.read_rds(p, assay=assay)
        return SpatialInput(adata, "rds", p, info)
    if p.is_dir() and platform is None and (suffix == ".zarr" or (p / ".zgroup").is_file()):
        return SpatialInput(_spatialdata().read_zarr(p), "zarr", p)
    if p.is_dir():
        name = platform or detect_platform(p)
        if name is None:
            raise SpatialImputeInputError(
                "path", "a SpatialData .zarr store or a Xenium, MERSCOPE or CosMx output folder",
                f"folder {str(p)!r} without {', '.join(PLATFORMS.values())} or .zgroup",
                "point at the instrument's output folder, or pass platform=",
            )
        return SpatialInput(_read_platform(p, name), name, p)
    raise SpatialImputeInputError("path", "an .h5ad or .rds file, a .zarr store or a platform output folder",
                                  repr(str(path)), "convert the data to AnnData (.h5ad) or SpatialData (.zarr)")


def _spatialdata():
    """The spatialdata module (its dependencies' import-time deprecation warnings silenced)."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", (DeprecationWarning, FutureWarning, UserWarning))
            import spatialdata
    except ImportError as err:
        raise ImportError(
            "Reading SpatialData stores and platform folders needs the extra [spatialdata]: "
            f"pip install 'spatialimpute[spatialdata]' ({err})"
        ) from err
    return spatialdata


def _read_platform(path: Path, platform: str):
    """The cell table (and cell shapes) of a platform output folder, through spatialdata-io."""
    _spatialdata()
    try:
        import spatialdata_io
    except ImportError as err:
        raise ImportError(f"Reading {platform} folders needs spatialdata-io: pip install 'spatialimpute[spatialdata]' "
                          f"({err})") from err
    if platform == "xenium":
        return spatialdata_io.xenium(
            path, cells_as_circles=True, cells_boundaries=False, nucleus_boundaries=False, cells_labels=False,
            nucleus_labels=False, transcripts=False, morphology_mip=False, morphology_focus=False,
            aligned_images=False,
        )
    if platform == "merscope":
        return spatialdata_io.merscope(path, transcripts=False, mosaic_images=False,
                                       cells_boundaries=(path / "cell_boundaries.parquet").is_file())
    return spatialdata_io.cosmx(path, transcripts=False)
