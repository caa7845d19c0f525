"""SpatialData in, SpatialData out: a cell table as the AnnData the core takes, and the
imputed genes as a new table annotating the same element.

The cells are the rows of one table (``table_key``) that annotates cell shapes, circles or
labels (``region``, ``region_key``, ``instance_key`` in the table's ``spatialdata_attrs``).
Coordinates are the centroids of the annotated elements in a coordinate system, or the
table's ``obsm["spatial"]``. A table annotating several regions (sections, FOVs) keeps
them apart: cells of different regions are never spatial neighbours.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .._validation import SpatialImputeInputError

#: ``obs`` column that carries the region of each cell into the core (as ``sample_key``).
REGION_COLUMN = "spatialimpute_region"


def is_spatialdata(obj) -> bool:
    """Whether ``obj`` is a ``spatialdata.SpatialData`` (without importing spatialdata)."""
    return any(c.__name__ == "SpatialData" and c.__module__.startswith("spatialdata") for c in type(obj).__mro__)


def table_keys(sdata, table_key: str):
    """``(table, regions, region_key, instance_key)`` of ``sdata.tables[table_key]``."""
    from .read import _spatialdata

    _spatialdata()
    from spatialdata.models import get_table_keys

    tables = list(sdata.tables.keys())
    if table_key not in sdata.tables:
        raise SpatialImputeInputError("table_key", f"one of the tables of the SpatialData ({tables or 'none'})",
                                      repr(table_key), "pass table_key= naming the cell table")
    table = sdata.tables[table_key]
    try:
        regions, region_key, instance_key = get_table_keys(table)
    except (KeyError, ValueError, TypeError) as err:
        raise SpatialImputeInputError(
            "table_key", "a table that annotates cell shapes, circles or labels (TableModel region keys)",
            f"table {table_key!r} without spatialdata_attrs ({err})",
            "parse it with spatialdata.models.TableModel.parse(adata, region=..., region_key=..., instance_key=...)",
        ) from err
    regions = [regions] if isinstance(regions, str) else list(regions)
    return table, regions, region_key, instance_key


def spatialdata_to_anndata(sdata, table_key: str = "table", coordinate_system: str | None = None):
    """The cells of one SpatialData table as an AnnData with coordinates and regions.

    Parameters
    ----------
    sdata
        ``spatialdata.SpatialData``.
    table_key
        Name of the cell table.
    coordinate_system
        Take coordinates from the centroids of the annotated elements in this coordinate
        system. ``None``: the table's ``obsm["spatial"]`` when present, otherwise the
        centroids in ``"global"``.

    Returns
    -------
    adata : anndata.AnnData
        A copy of the table with ``obsm["spatial"]`` set and ``obs[REGION_COLUMN]`` the
        region of each cell.
    info : dict
        ``table_key``, ``regions``, ``region_key``, ``instance_key``, ``coordinates`` (where
        they came from).
    """
    table, regions, region_key, instance_key = table_keys(sdata, table_key)
    adata = table.copy()
    if coordinate_system is None and "spatial" in table.obsm:
        source = f"table {table_key!r} obsm['spatial']"
    else:
        cs = coordinate_system or "global"
        adata.obsm["spatial"] = _centroids(sdata, table, regions, region_key, instance_key, cs)
        source = f"centroids of {', '.join(regions)} in coordinate system {cs!r}"
    adata.obsm["spatial"] = np.asarray(adata.obsm["spatial"], dtype=np.float64)[:, :2]
    adata.obs[REGION_COLUMN] = table.obs[region_key].astype(str).to_numpy()
    info = {"table_key": table_key, "regions": regions, "region_key": region_key, "instance_key": instance_key,
            "coordinates": source}
    return adata, info


def _centroids(sdata, table, regions, region_key, instance_key, cs: str) -> np.ndarray:
    from spatialdata import get_centroids
    from spatialdata.transformations import get_transformation

    coords = np.full((table.n_obs, 2), np.nan)
    region_of = table.obs[region_key].astype(str).to_numpy()
    for region in regions:
        if region not in sdata:
            raise SpatialImputeInputError(
                "coordinate_system", f"the annotated element {region!r} in the SpatialData to take centroids from",
                "no such element", "read it with its shapes (or pass coordinate_system=None to use obsm['spatial'])",
            )
        systems = list(get_transformation(sdata[region], get_all=True))
        if cs not in systems:
            raise SpatialImputeInputError("coordinate_system", f"a coordinate system of element {region!r} ({systems})",
                                          repr(cs), "pass one of those")
        centroids = get_centroids(sdata[region], coordinate_system=cs).compute()
        rows = np.flatnonzero(region_of == region)
        pos = pd.Index(centroids.index).get_indexer(table.obs[instance_key].to_numpy()[rows])
        if (pos < 0).any():
            raise SpatialImputeInputError(
                "table_key", f"every cell of region {region!r} in the element's instances",
                f"{int((pos < 0).sum())} cells of the table without a shape", "subset the table to the element's cells",
            )
        coords[rows] = centroids[["x", "y"]].to_numpy()[pos]
    return coords


def add_table(sdata, result, info: dict, result_key: str = "imputed"):
    """A new SpatialData: ``sdata``'s elements and tables plus ``result`` as table ``result_key``.

    The new table annotates the same element(s) as the source table (same region, region
    key and instance ids, in the same cell order); its ``var["reliability"]`` is the
    per-gene reliability. ``sdata`` itself is not modified.
    """
    from spatialdata import SpatialData
    from spatialdata.models import TableModel

    if result_key in sdata.tables:
        raise SpatialImputeInputError("result_key", "a table name not used yet", repr(result_key),
                                      f"pass another name (tables: {list(sdata.tables.keys())})")
    source = sdata.tables[info["table_key"]]
    table = result.copy()
    table.obs = table.obs.drop(columns=[REGION_COLUMN], errors="ignore")
    table.obs[info["region_key"]] = pd.Categorical(source.obs[info["region_key"]].astype(str).to_numpy())
    table.obs[info["instance_key"]] = source.obs[info["instance_key"]].to_numpy()
    table.uns["spatialimpute"] = {**table.uns.get("spatialimpute", {}), "coordinates": info["coordinates"],
                                  "source_table": info["table_key"]}
    regions = info["regions"] if len(info["regions"]) > 1 else info["regions"][0]
    table = TableModel.parse(table, region=regions, region_key=info["region_key"],
                             instance_key=info["instance_key"])
    return SpatialData(images=dict(sdata.images), labels=dict(sdata.labels), points=dict(sdata.points),
                       shapes=dict(sdata.shapes), tables={**dict(sdata.tables), result_key: table})


def impute_spatialdata(sdata, reference, *, table_key: str = "table", coordinate_system: str | None = None,
                       result_key: str = "imputed", return_anndata: bool = False, impute_fn, **kwargs):
    """Run ``impute_fn`` (:func:`spatialimpute.impute` on AnnData) on a SpatialData table.

    Regions become sections (``sample_key``) unless ``sample_key`` is given. Returns a new
    SpatialData with table ``result_key``, or the AnnData result with ``return_anndata``.
    """
    adata, info = spatialdata_to_anndata(sdata, table_key, coordinate_system)
    kwargs.setdefault("sample_key", REGION_COLUMN)
    kwargs.setdefault("spatial_key", "spatial")
    result = impute_fn(adata, reference, **kwargs)
    if return_anndata:
        return result
    return add_table(sdata, result, info, result_key)
