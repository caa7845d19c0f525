"""SpatialData in and out, and Xenium / MERSCOPE / CosMx output folders read through the real
spatialdata-io readers (folders written by tests/platform_folders.py)."""

from __future__ import annotations


import numpy as np
import pandas as pd
import pytest

pytest.importorskip("spatialdata_io")

import spatialdata  # noqa: E402
from spatialdata.models import ShapesModel, TableModel  # noqa: E402
from spatialdata.transformations import Scale  # noqa: E402

import spatialimpute as si  # noqa: E402
from spatialimpute import cli  # noqa: E402
from spatialimpute._validation import SpatialImputeInputError  # noqa: E402
from spatialimpute.datasets import simulate_pair  # noqa: E402
from spatialimpute.io import detect_platform, read_spatial  # noqa: E402
from spatialimpute.io.sdata import spatialdata_to_anndata  # noqa: E402

from platform_folders import write_cosmx, write_merscope, write_xenium  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def pair():
    spatial, reference, truth = simulate_pair(n_spatial=120, n_reference=200, n_genes=30, n_panel=20, seed=0)
    return spatial, reference


def _two_region_sdata(spatial):
    """Two sections as two circle elements in one coordinate frame (overlapping), one table."""
    half = spatial.n_obs // 2
    xy = spatial.obsm["spatial"]
    shapes, region = {}, np.where(np.arange(spatial.n_obs) < half, "section_a", "section_b")
    ids = np.arange(spatial.n_obs) % half  # instance ids repeat across regions
    for name in ("section_a", "section_b"):
        rows = region == name
        shapes[name] = ShapesModel.parse(xy[rows] * 2.0, geometry=0, radius=np.full(rows.sum(), 5.0),
                                         index=pd.Index(ids[rows]), transformations={"global": Scale([0.5, 0.5], axes=("x", "y"))})
    table = spatial.copy()
    del table.obsm["spatial"]
    table.obs["region"] = pd.Categorical(region)
    table.obs["cell_id"] = ids
    table = TableModel.parse(table, region=["section_a", "section_b"], region_key="region", instance_key="cell_id")
    return spatialdata.SpatialData(shapes=shapes, tables={"table": table})


def test_spatialdata_centroids_and_regions(pair):
    spatial, _ = pair
    sdata = _two_region_sdata(spatial)
    adata, info = spatialdata_to_anndata(sdata, "table")
    np.testing.assert_allclose(adata.obsm["spatial"], spatial.obsm["spatial"])  # centroids in "global"
    assert info["regions"] == ["section_a", "section_b"] and "centroids" in info["coordinates"]
    with pytest.raises(SpatialImputeInputError, match="coordinate_system"):
        spatialdata_to_anndata(sdata, "table", coordinate_system="aligned")
    with pytest.raises(SpatialImputeInputError, match="table_key"):
        spatialdata_to_anndata(sdata, "cells")


def test_impute_spatialdata_adds_a_table_and_leaves_the_input(pair, tmp_path):
    spatial, reference = pair
    sdata = _two_region_sdata(spatial)
    sdata.write(tmp_path / "in.zarr")
    sdata = read_spatial(tmp_path / "in.zarr").data
    before = sdata.tables["table"].copy()
    out = si.impute(sdata, reference, method="knn")
    assert list(sdata.tables.keys()) == ["table"]  # input untouched
    assert (sdata.tables["table"].X != before.X).nnz == 0 if hasattr(before.X, "nnz") else \
        np.array_equal(sdata.tables["table"].X, before.X)
    table = out.tables["imputed"]
    assert list(table.obs_names) == list(before.obs_names)
    assert table.uns["spatialdata_attrs"]["region"] == ["section_a", "section_b"]
    assert (table.obs["cell_id"].to_numpy() == before.obs["cell_id"].to_numpy()).all()
    assert table.var["reliability"].between(0, 1).all()
    assert out.shapes.keys() == sdata.shapes.keys()
    adata = si.impute(sdata, reference, method="knn", return_anndata=True)
    np.testing.assert_allclose(adata.X, table.X)


@pytest.mark.parametrize("platform", ["xenium", "merscope", "cosmx"])
def test_platform_folders_read_through_spatialdata_io(pair, tmp_path, platform):
    spatial, reference = pair
    writer = {"xenium": write_xenium, "merscope": write_merscope,
              "cosmx": lambda s, p: write_cosmx(s, p, fov=np.arange(s.n_obs) % 2 + 1)}[platform]
    folder = writer(spatial, tmp_path / platform)
    assert detect_platform(folder) == platform
    got = read_spatial(folder)
    assert got.kind == platform
    table = got.data.tables["table"]
    assert table.n_obs == spatial.n_obs and set(table.var_names) == set(spatial.var_names)
    np.testing.assert_array_equal(np.asarray(table[:, spatial.var_names].X.todense() if hasattr(table.X, "todense")
                                             else table[:, spatial.var_names].X), np.rint(spatial.X))
    out = si.impute(got.data, reference, method="knn", return_anndata=True)
    assert out.n_obs == spatial.n_obs and out.n_vars == reference.n_vars - spatial.n_vars


def test_cosmx_fovs_are_separate_sections(pair, tmp_path):
    """Local FOV coordinates overlap; the FOVs (regions) must not become neighbours."""
    spatial, reference = pair
    folder = write_cosmx(spatial, tmp_path / "cosmx", fov=np.arange(spatial.n_obs) % 2 + 1)
    sdata = read_spatial(folder).data
    adata, info = spatialdata_to_anndata(sdata, "table")
    assert len(info["regions"]) == 2
    model = si.KNNImpute(adata, reference, sample_key="spatialimpute_region")
    assert model.paired.n_sections == 2


def test_cli_reads_a_xenium_folder_and_writes_zarr(pair, tmp_path, capsys):
    spatial, reference = pair
    folder = write_xenium(spatial, tmp_path / "xenium")
    reference.write_h5ad(tmp_path / "ref.h5ad")
    assert cli.main(["--no-progress", "impute", "--spatial", str(folder), "--reference", str(tmp_path / "ref.h5ad"),
                     "--out", str(tmp_path / "out.zarr"), "--method", "knn"]) == 0
    out = spatialdata.read_zarr(tmp_path / "out.zarr")
    assert {"table", "imputed"} <= set(out.tables.keys()) and "cell_circles" in out.shapes
    assert out.tables["imputed"].uns["spatialdata_attrs"]["region"] == "cell_circles"
    assert cli.main(["--no-progress", "impute", "--spatial", str(folder), "--reference", str(tmp_path / "ref.h5ad"),
                     "--out", str(tmp_path / "out.h5ad"), "--method", "knn"]) == 0
    import anndata

    assert anndata.read_h5ad(tmp_path / "out.h5ad").n_obs == spatial.n_obs


def test_unknown_folder_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SpatialImputeInputError, match="Xenium, MERSCOPE or CosMx"):
        read_spatial(tmp_path / "empty")
    with pytest.raises(SpatialImputeInputError, match="platform"):
        read_spatial(tmp_path / "empty", platform="visium")
