"""The .rds bridge (rpy2 + anndata2ri): SingleCellExperiment, SpatialExperiment, Seurat.

Skips cleanly when R, rpy2, anndata2ri or the R package SingleCellExperiment are absent.
The R objects are built in R (through rpy2) from numpy arrays with known values, so every
round trip is checked number for number.
"""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest

from spatialimpute import rbridge
from spatialimpute._validation import SpatialImputeInputError

# Cheap collection-time check (does not start R); R itself starts in the fixture below, only
# in the process that runs these tests.
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("rpy2") is None or importlib.util.find_spec("anndata2ri") is None,
    reason="rpy2 / anndata2ri not installed (pip install 'spatialimpute[r]')",
)

ro = None


@pytest.fixture(scope="module", autouse=True)
def _r_session():
    """Start R through rpy2 once; skip when R or SingleCellExperiment is missing."""
    global ro
    if not rbridge.is_available():
        pytest.skip("R / rpy2 / anndata2ri not usable here")
    try:
        ro, _ = rbridge._r()
    except ImportError as err:
        pytest.skip(str(err))
    yield


def _has_r_package(name: str) -> bool:
    return bool(ro.r(f"isTRUE(suppressPackageStartupMessages(requireNamespace('{name}', quietly = TRUE)))")[0])


N_CELLS, N_REF = 60, 90
PANEL = [f"G{i:02d}" for i in range(8)]
TARGETS = ["T0", "T1", "T2"]


@pytest.fixture(scope="module")
def toy():
    """Planted pair: type A (left half) expresses G00-G03 and T0, type B G04-G07 and T1."""
    rng = np.random.default_rng(0)
    xy = rng.random((N_CELLS, 2)) * 100
    is_a = xy[:, 0] < 50
    genes = PANEL + TARGETS

    def means(a):
        mu = np.full((a.size, len(genes)), 2.0)
        mu[np.ix_(a, [0, 1, 2, 3, 8])] = 30
        mu[np.ix_(~a, [4, 5, 6, 7, 9])] = 30
        mu[:, 10] = 8
        return mu

    sp_counts = rng.poisson(means(is_a)[:, :8]).astype(float)
    ref_a = np.arange(N_REF) % 2 == 0
    ref_counts = rng.poisson(means(ref_a)).astype(float)
    return dict(xy=xy, is_a=is_a, sp_counts=sp_counts, ref_counts=ref_counts)


def _r_matrix(values: np.ndarray, rows: list[str], cols: list[str]):
    """cells x genes numpy -> R genes x cells matrix with dimnames."""
    mat = ro.r["matrix"](ro.FloatVector(values.T.ravel(order="F").tolist()), nrow=len(rows), ncol=len(cols))
    mat.rownames = ro.StrVector(rows)
    mat.colnames = ro.StrVector(cols)
    return mat


def _save(tmp_path, name: str, builder: str, **objects) -> str:
    """Run an R function(builder) on the given objects and saveRDS its value."""
    path = str(tmp_path / name)
    # Built and saved inside R: the object never comes back to Python.
    ro.r(f"function(path, ...) saveRDS(({builder})(...), path)")(path, **objects)
    return path


CELLS = [f"cell{i:03d}" for i in range(N_CELLS)]
REF_CELLS = [f"ref{i:03d}" for i in range(N_REF)]

SCE_BUILDER = """function(counts, xy, is_a, mode) {
    sce <- SingleCellExperiment::SingleCellExperiment(list(counts = counts, other = counts * 2),
        colData = S4Vectors::DataFrame(type = ifelse(is_a, "A", "B"), is_a = is_a))
    xy <- matrix(xy, ncol = 2, dimnames = list(colnames(counts), c("x", "y")))
    if (mode == "spatialCoords") SingleCellExperiment::int_colData(sce)$spatialCoords <- xy
    if (mode == "reducedDim") SingleCellExperiment::reducedDim(sce, "spatial") <- xy
    if (mode == "fake_spe") {
        SingleCellExperiment::int_colData(sce)$spatialCoords <- xy
        class(sce) <- structure("SpatialExperiment", package = "SpatialExperiment")
    }
    if (mode == "spe") {
        sce <- SpatialExperiment::SpatialExperiment(assays = list(counts = counts),
            colData = SummarizedExperiment::colData(sce), spatialCoords = xy)
    }
    if (mode == "spe_two_sections") {  # two sections in one coordinate frame
        cd <- SummarizedExperiment::colData(sce)
        cd$sample_id <- rep(c("s1", "s2"), length.out = ncol(counts))
        sce <- SpatialExperiment::SpatialExperiment(assays = list(counts = counts), colData = cd,
                                                    spatialCoords = xy)
    }
    sce
}"""

REF_BUILDER = """function(counts) {
    SingleCellExperiment::SingleCellExperiment(list(counts = as(counts, "CsparseMatrix")))
}"""

SEURAT_BUILDER = """function(counts, xy) {
    counts <- as(as(counts, "CsparseMatrix"), "generalMatrix")
    seu <- suppressWarnings(SeuratObject::CreateSeuratObject(counts = counts, assay = "RNA"))
    xy <- matrix(xy, ncol = 2)
    cents <- SeuratObject::CreateCentroids(data.frame(x = xy[, 1], y = xy[, 2], cell = colnames(counts)))
    seu[["fov"]] <- SeuratObject::CreateFOV(coords = list(centroids = cents), type = "centroids",
                                            assay = "RNA", key = "fov_")
    seu
}"""


def _spatial_rds(tmp_path, toy, mode: str, name: str = "spatial.rds") -> str:
    return _save(tmp_path, name, SCE_BUILDER, counts=_r_matrix(toy["sp_counts"], PANEL, CELLS),
                 xy=ro.FloatVector(toy["xy"].ravel(order="F").tolist()),
                 is_a=ro.BoolVector(toy["is_a"].tolist()), mode=mode)


@pytest.fixture(scope="module")
def reference_rds(tmp_path_factory, toy):
    return _save(tmp_path_factory.mktemp("ref"), "reference.rds", REF_BUILDER,
                 counts=_r_matrix(toy["ref_counts"], PANEL + TARGETS, REF_CELLS))


def _impute(spatial, reference):
    from spatialimpute import impute

    return impute(spatial, reference, method="knn", k=15, seed=0, device="cpu")


def _check_altexp(obj, result, name="imputed"):
    """The altExp of an R SCE holds the result's numbers, genes, cells and reliability."""
    ae = ro.r("function(x, n) SingleCellExperiment::altExp(x, n)")(obj, name)
    got = np.asarray(ro.r("function(a) as.matrix(SummarizedExperiment::assay(a, 'logcounts'))")(ae))
    np.testing.assert_allclose(got.T, np.asarray(result.X, dtype=np.float64), rtol=1e-6)
    assert list(ro.r("rownames")(ae)) == list(result.var_names)
    assert list(ro.r("colnames")(ae)) == list(result.obs_names)
    rel = np.asarray(ro.r("function(a) SummarizedExperiment::rowData(a)$reliability")(ae))
    np.testing.assert_allclose(rel, result.var["reliability"].to_numpy(dtype=float), rtol=1e-6)
    # Every per-gene column of var, in order.
    assert list(ro.r("function(a) colnames(SummarizedExperiment::rowData(a))")(ae)) == list(result.var.columns)
    # The interval layers, when the result has them.
    layers = [n for n in ("lower", "upper") if n in result.layers]
    assert list(ro.r("function(a) SummarizedExperiment::assayNames(a)")(ae)) == ["logcounts", *layers]
    for layer in layers:
        got = np.asarray(ro.r(f"function(a) as.matrix(SummarizedExperiment::assay(a, '{layer}'))")(ae))
        np.testing.assert_allclose(got.T, np.asarray(result.layers[layer], dtype=np.float64), rtol=1e-6)
    method = ro.r("function(a) S4Vectors::metadata(a)$imputeSpatial$provenance$method")(ae)[0]
    assert method == result.uns["spatialimpute"]["method"]


def test_sce_with_spatial_coords_round_trip(tmp_path, toy, reference_rds):
    path = _spatial_rds(tmp_path, toy, "spatialCoords")
    spatial, info = rbridge.read_rds(path)
    assert info["kind"] == "SingleCellExperiment"
    assert info["coords"] == "spatialCoords"
    assert info["assay"] == "counts"
    assert list(spatial.obs_names) == CELLS and list(spatial.var_names) == PANEL
    np.testing.assert_array_equal(np.asarray(spatial.X), toy["sp_counts"])
    np.testing.assert_allclose(spatial.obsm["spatial"], toy["xy"])
    assert spatial.obs["is_a"].dtype == bool
    np.testing.assert_array_equal(spatial.obs["is_a"].to_numpy(), toy["is_a"])

    reference, ref_info = rbridge.read_rds(reference_rds)
    assert ref_info["coords"] is None
    np.testing.assert_array_equal(reference.X.toarray(), toy["ref_counts"])

    result = _impute(spatial, reference)
    # Planted answer: T0 is high in type A (left) cells, T1 in type B cells.
    t0 = np.asarray(result[:, "T0"].X).ravel()
    assert t0[toy["is_a"]].mean() - t0[~toy["is_a"]].mean() > 1.0

    out = tmp_path / "out" / "imputed.rds"
    rbridge.write_rds(result, info, out)
    back = ro.r["readRDS"](str(out))
    assert ro.r("function(x) class(x)[1]")(back)[0] == "SingleCellExperiment"
    _check_altexp(back, result)
    # The original assays and coordinates are kept.
    kept = np.asarray(ro.r("function(x) as.matrix(SummarizedExperiment::assay(x, 'counts'))")(back))
    np.testing.assert_array_equal(kept.T, toy["sp_counts"])
    xy = np.asarray(ro.r("function(x) SingleCellExperiment::int_colData(x)$spatialCoords")(back))
    np.testing.assert_allclose(xy, toy["xy"])
    assert not list(tmp_path.glob("out/*.tmp"))


def test_reduced_dim_coordinates_and_other_assay(tmp_path, toy):
    path = _spatial_rds(tmp_path, toy, "reducedDim")
    spatial, info = rbridge.read_rds(path, assay="other")
    assert info["coords"] == "reducedDim:spatial"
    assert info["assay"] == "other"
    np.testing.assert_array_equal(np.asarray(spatial.X), 2 * toy["sp_counts"])
    np.testing.assert_allclose(spatial.obsm["spatial"], toy["xy"])
    with pytest.raises(SpatialImputeInputError, match="no such assay"):
        rbridge.read_rds(path, assay="nope")


def test_spatial_experiment_is_restored(tmp_path, toy, reference_rds):
    if _has_r_package("SpatialExperiment"):
        mode, expected_class = "spe", "SpatialExperiment"
    else:
        # A SpatialExperiment saved where the package exists, read where it does not: it is
        # read as a SingleCellExperiment and written back as one with a "spatial" reducedDim.
        mode, expected_class = "fake_spe", "SingleCellExperiment"
    path = _spatial_rds(tmp_path, toy, mode)
    spatial, info = rbridge.read_rds(path)
    assert info["kind"] == "SpatialExperiment"
    np.testing.assert_allclose(spatial.obsm["spatial"], toy["xy"])
    reference, _ = rbridge.read_rds(reference_rds)
    result = _impute(spatial, reference)
    out = tmp_path / "imputed.rds"
    rbridge.write_rds(result, info, out)
    back = ro.r["readRDS"](str(out))
    assert ro.r("function(x) class(x)[1]")(back)[0] == expected_class
    _check_altexp(back, result)
    if expected_class == "SingleCellExperiment":
        xy = np.asarray(ro.r("function(x) SingleCellExperiment::reducedDim(x, 'spatial')")(back))
        np.testing.assert_allclose(xy, toy["xy"])


def test_seurat_round_trip(tmp_path, toy, reference_rds):
    if not _has_r_package("SeuratObject"):
        pytest.skip("R package SeuratObject not installed")
    path = _save(tmp_path, "seurat.rds", SEURAT_BUILDER, counts=_r_matrix(toy["sp_counts"], PANEL, CELLS),
                 xy=ro.FloatVector(toy["xy"].ravel(order="F").tolist()))
    spatial, info = rbridge.read_rds(path)
    assert info["kind"] == "Seurat"
    assert info["coords"] == "image: fov"
    np.testing.assert_array_equal(np.asarray(spatial.X.toarray() if hasattr(spatial.X, "toarray") else spatial.X),
                                  toy["sp_counts"])
    np.testing.assert_allclose(spatial.obsm["spatial"], toy["xy"])
    reference, _ = rbridge.read_rds(reference_rds)
    result = _impute(spatial, reference)
    out = tmp_path / "imputed_seurat.rds"
    rbridge.write_rds(result, info, out)
    back = ro.r["readRDS"](str(out))
    assert ro.r("function(x) class(x)[1]")(back)[0] == "Seurat"
    assert sorted(ro.r("function(x) SeuratObject::Assays(x)")(back)) == ["RNA", "imputed"]
    data = np.asarray(ro.r("function(x) as.matrix(SeuratObject::GetAssayData(x[['imputed']], 'data'))")(back))
    np.testing.assert_allclose(data.T, np.asarray(result.X, dtype=np.float64), rtol=1e-6)
    rel = np.asarray(ro.r("function(x) x[['imputed']][[]]$reliability")(back))
    np.testing.assert_allclose(rel, result.var["reliability"].to_numpy(dtype=float), rtol=1e-6)
    assert ro.r("function(x) x@tools$imputeSpatial$imputed$provenance$method")(back)[0] == "knn"


def test_spatialexperiment_sections_round_trip(tmp_path, toy, reference_rds):
    """The R package reads sample_id as obs["sample_id"]; the result keeps the class."""
    if not _has_r_package("SpatialExperiment"):
        pytest.skip("R package SpatialExperiment not installed")
    path = _spatial_rds(tmp_path, toy, "spe_two_sections")
    spatial, info = rbridge.read_rds(path)
    assert info["kind"] == "SpatialExperiment"
    assert list(spatial.obs["sample_id"][:4]) == ["s1", "s2", "s1", "s2"]
    reference, _ = rbridge.read_rds(reference_rds)
    from spatialimpute import impute

    result = impute(spatial, reference, method="knn", k=15, seed=0, device="cpu", sample_key="sample_id")
    out = tmp_path / "spe_out.rds"
    rbridge.write_rds(result, info, out)
    back = ro.r["readRDS"](str(out))
    assert ro.r("function(x) class(x)[1]")(back)[0] == "SpatialExperiment"
    _check_altexp(back, result)


def _impute_auto(spatial, reference):
    from spatialimpute import impute

    return impute(spatial, reference, members=("knn",), knn_neighbors=(15,), seed=0, device="cpu")


def test_auto_result_round_trip_sce_and_seurat(tmp_path, toy, reference_rds):
    """method="auto": intervals, every per-gene column and the ensemble summary reach R objects."""
    path = _spatial_rds(tmp_path, toy, "spatialCoords")
    spatial, info = rbridge.read_rds(path)
    reference, _ = rbridge.read_rds(reference_rds)
    result = _impute_auto(spatial, reference)
    assert {"lower", "upper"} <= set(result.layers)
    assert {"reliability_lower", "reliability_upper"} <= set(result.var.columns)
    out = tmp_path / "auto.rds"
    rbridge.write_rds(result, info, out)
    back = ro.r["readRDS"](str(out))
    _check_altexp(back, result)
    interval = ro.r("function(x) SpatialImpute::reliability(x, interval = TRUE)")(back)
    np.testing.assert_allclose(np.asarray(interval.rx2("lower")), result.var["reliability_lower"].to_numpy(float))
    assert ro.r("function(x) SpatialImpute::imputeInfo(x)$method")(back)[0] == "auto"
    members = list(ro.r("function(x) SpatialImpute::ensembleSummary(x)$member")(back))
    assert sorted(members) == sorted(result.uns["spatialimpute"]["auto"]["members"])

    if not _has_r_package("SeuratObject"):
        return
    seurat_path = _save(tmp_path, "seurat.rds", SEURAT_BUILDER, counts=_r_matrix(toy["sp_counts"], PANEL, CELLS),
                        xy=ro.FloatVector(toy["xy"].ravel(order="F").tolist()))
    spatial, info = rbridge.read_rds(seurat_path)
    result = _impute_auto(spatial, reference)
    out = tmp_path / "auto_seurat.rds"
    rbridge.write_rds(result, info, out)
    back = ro.r["readRDS"](str(out))
    assert sorted(ro.r("function(x) SeuratObject::Assays(x)")(back)) == [
        "RNA", "imputed", "imputed_lower", "imputed_upper"]
    meta = list(ro.r("function(x) colnames(x[['imputed']][[]])")(back))
    assert meta == list(result.var.columns)
    for layer in ("lower", "upper"):
        got = np.asarray(ro.r(f"function(x) as.matrix(SpatialImpute::imputedIntervals(x)${layer})")(back))
        np.testing.assert_allclose(got.T, np.asarray(result.layers[layer], dtype=np.float64), rtol=1e-6)


def test_missing_r_package_is_named(monkeypatch):
    """Without the R package SpatialImpute the bridge says what to install."""
    real_r = ro.r

    def fake_r(code):
        return real_r("FALSE") if "requireNamespace('SpatialImpute'" in code else real_r(code)

    monkeypatch.setattr(rbridge, "_STATE", {})
    monkeypatch.setattr(ro, "r", fake_r)
    with pytest.raises(ImportError, match="R package SpatialImpute.*R CMD INSTALL rpkg"):
        rbridge._r()


def test_cli_impute_rds_to_rds(tmp_path, toy, reference_rds):
    from spatialimpute import cli

    path = _spatial_rds(tmp_path, toy, "spatialCoords")
    out = tmp_path / "cli.rds"
    status = cli.main(["--no-progress", "impute", "--spatial", path, "--reference", reference_rds,
                       "--out", str(out), "--method", "knn", "--param", "k=15", "--device", "cpu"])
    assert status == 0
    back = ro.r["readRDS"](str(out))
    genes = list(ro.r("function(x) rownames(SingleCellExperiment::altExp(x, 'imputed'))")(back))
    assert genes == TARGETS


def test_bad_files_and_mismatched_results(tmp_path, toy, reference_rds):
    with pytest.raises(SpatialImputeInputError, match="existing"):
        rbridge.read_rds(tmp_path / "missing.rds")
    bad = str(tmp_path / "list.rds")
    ro.r["saveRDS"](ro.r("list(a = 1)"), bad)
    with pytest.raises(SpatialImputeInputError, match="SingleCellExperiment"):
        rbridge.read_rds(bad)
    path = _spatial_rds(tmp_path, toy, "spatialCoords")
    spatial, info = rbridge.read_rds(path)
    reference, _ = rbridge.read_rds(reference_rds)
    result = _impute(spatial, reference)
    with pytest.raises(SpatialImputeInputError, match="same order"):
        rbridge.write_rds(result[::-1].copy(), info, tmp_path / "x.rds")
    with pytest.raises(SpatialImputeInputError, match="info"):
        rbridge.write_rds(result, {"kind": "x"}, tmp_path / "x.rds")
    assert not (tmp_path / "x.rds").exists()


def test_refuses_to_run_inside_r(monkeypatch):
    monkeypatch.setitem(sys.modules, "rpycall", object())
    assert rbridge.is_available() is False
    with pytest.raises(RuntimeError, match="reticulate"):
        rbridge._r()
