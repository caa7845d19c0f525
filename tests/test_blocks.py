"""Train once, predict in blocks: blocked = whole, the out-of-core zarr store, resume, dask schedulers."""

from __future__ import annotations

import anndata
import numpy as np
import pytest

import spatialimpute as si
from spatialimpute import cli
from spatialimpute.io.zarr_store import partial_path
from spatialimpute.model._base import BaseImputer
from spatialimpute.module.stimpute import final_blend


@pytest.fixture(scope="module")
def knn(small_pair):
    spatial, reference, _ = small_pair
    return si.KNNImpute(spatial, reference, num_threads=1).train()


@pytest.fixture(scope="module")
def stimpute(small_pair):
    spatial, reference, _ = small_pair
    return si.StImpute(spatial, reference, num_threads=1).train()


@pytest.fixture(scope="module")
def whole(knn, stimpute):
    """Each model's prediction as one block."""
    return {"knn": knn.impute(block_size=10**6), "stimpute": stimpute.impute(block_size=10**6)}


def _same(a, b, exact: bool):
    a, b = np.asarray(a.X, dtype=np.float32), np.asarray(b.X, dtype=np.float32)
    if exact:
        np.testing.assert_array_equal(a, b)
    else:  # GNN matrix products of other shapes may round the last bit differently
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("scheduler", ["synchronous", "threads"])
def test_knn_blocks_equal_whole(knn, whole, scheduler):
    blocked = knn.impute(block_size=37, scheduler=scheduler)
    _same(blocked, whole["knn"], exact=True)
    assert blocked.uns["spatialimpute"]["prediction"]["n_blocks"] == 11
    np.testing.assert_array_equal(blocked.var["reliability"], whole["knn"].var["reliability"])


def test_stimpute_blocks_use_the_global_blend_statistics(stimpute, whole):
    blocked = stimpute.impute(block_size=37, scheduler="synchronous")
    _same(blocked, whole["stimpute"], exact=False)
    np.testing.assert_array_equal(blocked.var["reliability"], whole["stimpute"].var["reliability"])
    # the blend of a block on its own maxima would differ: the scan pass is what makes blocks agree
    cells = np.arange(37)
    alone = final_blend(*stimpute._blend_parts(cells), float(stimpute.architecture.alpha)).numpy()
    assert np.abs(alone - whole["stimpute"].X[cells]).max() > 1e-3


def test_stimpute_blend_maxima_from_a_sample_when_cells_fill_several_blocks(small_pair, whole):
    spatial, reference, _ = small_pair
    sampled = si.StImpute(spatial, reference, num_threads=1, blend_max_cells=40).train()
    one_block = sampled.impute(block_size=10**6)  # one block: one GNN pass over all cells, exact maxima
    _same(one_block, whole["stimpute"], exact=False)
    blocked = sampled.impute(block_size=37, scheduler="synchronous")
    assert sampled.config()["architecture"]["blend_max_cells"] == 40
    exact, approx = np.asarray(whole["stimpute"].X), np.asarray(blocked.X)
    assert np.abs(exact - approx).max() > 1e-4  # the maxima of 40 cells are not those of all cells
    corr = [np.corrcoef(exact[:, j], approx[:, j])[0, 1] for j in range(exact.shape[1]) if exact[:, j].std() > 0]
    assert np.median(corr) > 0.9


def test_zarr_store_equals_memory_and_opens_lazily(knn, whole, tmp_path):
    path = tmp_path / "imputed.zarr"
    out = knn.impute(out=path, block_size=100)
    assert not partial_path(path).exists()
    import dask.array as da

    assert isinstance(out.X, da.Array) and out.X.chunks[0] == (100, 100, 100, 100)
    ref = whole["knn"]
    _same(out, ref, exact=True)
    assert list(out.obs_names) == list(ref.obs_names) and list(out.var_names) == list(ref.var_names)
    np.testing.assert_array_equal(out.var["reliability"], ref.var["reliability"])
    np.testing.assert_array_equal(out.obsm["spatial"], ref.obsm["spatial"])
    assert out.uns["spatialimpute"]["method"] == "knn"
    eager = anndata.read_zarr(path)  # an ordinary AnnData store
    np.testing.assert_array_equal(eager.X, ref.X)
    half = knn.impute(out=tmp_path / "half.zarr", dtype="float16")
    assert half.X.dtype == np.float16
    np.testing.assert_allclose(np.asarray(half.X, dtype=np.float32), ref.X, rtol=1e-3, atol=1e-3)
    # the reliability reads the stored (rounded) values, as it reads the returned ones in memory
    half_in_memory = knn.impute(dtype="float16")
    np.testing.assert_array_equal(half.var["reliability"], half_in_memory.var["reliability"])


def test_failure_leaves_no_store_and_resume_skips_finished_blocks(small_pair, whole, tmp_path, monkeypatch):
    spatial, reference, _ = small_pair
    model = si.KNNImpute(spatial, reference, num_threads=1).train()
    calls = []
    predict = type(model)._predict_block

    def failing(self, cells, stats):
        calls.append(int(cells[0]))
        if len(calls) == 4:
            raise RuntimeError("injected failure")
        return predict(self, cells, stats)

    monkeypatch.setattr(type(model), "_predict_block", failing)
    path = tmp_path / "imputed.zarr"
    with pytest.raises(RuntimeError, match="injected"):
        model.impute(out=path, block_size=50, scheduler="synchronous")
    assert not path.exists() and partial_path(path).is_dir()
    with pytest.raises(si.SpatialImputeInputError, match="resume"):
        model.impute(out=path, block_size=40, scheduler="synchronous", resume=True)  # another run's store
    calls.clear()
    monkeypatch.setattr(type(model), "_predict_block", lambda self, cells, stats: (calls.append(int(cells[0])),
                                                                                   predict(self, cells, stats))[1])
    out = model.impute(out=path, block_size=50, scheduler="synchronous", resume=True)
    # 8 blocks, 3 written before the failure; the reliability reads its cells' rows back
    # from the store (those of the resumed blocks too) instead of predicting them again
    assert calls == [150, 200, 250, 300, 350]
    _same(out, whole["knn"], exact=True)
    assert not partial_path(path).exists()


def test_methods_without_a_block_path_fall_back_to_whole(small_pair, whole):
    spatial, reference, _ = small_pair
    calls = []

    class Whole(si.KNNImpute):  # like STGNET with refine=True: only _predict
        _predict_block = BaseImputer._predict_block

        def _predict(self):
            calls.append(1)
            return si.KNNImpute._predict_block(self, np.arange(self.paired.n_cells), None)

    out = Whole(spatial, reference, num_threads=1).impute(block_size=64, scheduler="threads")
    _same(out, whole["knn"], exact=True)
    assert len(calls) == 1


def test_loaded_model_blocks_follow_the_callers_order(knn, whole, small_pair, tmp_path):
    spatial, reference, _ = small_pair
    knn.save(tmp_path / "model")
    order = np.random.default_rng(0).permutation(spatial.n_obs)
    loaded = si.KNNImpute.load(tmp_path / "model", spatial[order].copy(), reference)
    out = loaded.impute(block_size=33)
    assert list(out.obs_names) == list(spatial.obs_names[order])
    np.testing.assert_array_equal(out.X, whole["knn"].X[order])


def test_bad_block_options_are_clear(knn, tmp_path):
    with pytest.raises(si.SpatialImputeInputError, match="scheduler"):
        knn.impute(scheduler="processes")
    with pytest.raises(si.SpatialImputeInputError, match="block_size"):
        knn.impute(block_size=0)
    with pytest.raises(si.SpatialImputeInputError, match="dtype"):
        knn.impute(dtype="int8")
    with pytest.raises(si.SpatialImputeInputError, match="out"):
        knn.impute(out=tmp_path / "x.h5ad")


@pytest.mark.slow
def test_distributed_cluster_writes_the_same_store(knn, stimpute, whole, tmp_path):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  host="127.0.0.1") as cluster, distributed.Client(cluster) as client:
        for name, model in (("knn", knn), ("stimpute", stimpute)):
            out = model.impute(out=tmp_path / f"{name}.zarr", block_size=64, scheduler=client)
            _same(out, whole[name], exact=name == "knn")
            assert out.uns["spatialimpute"]["prediction"]["scheduler"].startswith("distributed:")
        assert len(client.has_what()) == 2


def test_si_impute_and_cli_write_an_anndata_store(pair, tmp_path, capsys):
    spatial, reference, _ = pair
    out = si.impute(spatial, reference, method="knn", out=tmp_path / "api.zarr", block_size=128, num_threads=1)
    assert out.shape == (spatial.n_obs, reference.n_vars - spatial.n_vars) and out.isbacked is False
    spatial.write_h5ad(tmp_path / "sp.h5ad")
    reference.write_h5ad(tmp_path / "ref.h5ad")
    assert cli.main(["--no-progress", "impute", "--spatial", str(tmp_path / "sp.h5ad"), "--reference",
                     str(tmp_path / "ref.h5ad"), "--out", str(tmp_path / "cli.zarr"), "--method", "knn",
                     "--block-size", "128", "--scheduler", "synchronous", "--threads", "1"]) == 0
    stored = anndata.read_zarr(tmp_path / "cli.zarr")
    np.testing.assert_array_equal(stored.X, np.asarray(out.X))
    assert stored.uns["spatialimpute"]["prediction"]["block_size"] == 128


def test_spatial_order_makes_runs_of_cells_compact_patches():
    """A shuffled 64 x 64 grid and a 256 x 16 strip: after ordering, every run of 256 cells is
    one 16 x 16 square; sections come whole, in the order they first appear."""
    grid = np.stack(np.meshgrid(np.arange(64), np.arange(64), indexing="ij"), -1).reshape(-1, 2).astype(float)
    rng = np.random.default_rng(0)
    coords = grid[rng.permutation(len(grid))]
    order = si.spatial_order(coords)
    assert sorted(order.tolist()) == list(range(len(coords)))
    for run in coords[order].reshape(-1, 256, 2):
        assert (np.ptp(run, axis=0) == 15).all()
    strip = np.stack(np.meshgrid(np.arange(256), np.arange(16), indexing="ij"), -1).reshape(-1, 2).astype(float)
    strip = strip[rng.permutation(len(strip))]  # a long strip of tissue: runs are still squares, not strips
    for run in strip[si.spatial_order(strip)].reshape(-1, 256, 2):
        assert (np.ptp(run, axis=0) == 15).all()
    sections = np.where(coords[:, 0] < 20, "left", "right")
    by_section = si.spatial_order(coords, sections)
    first = sections[0]
    n_first = int((sections == first).sum())
    assert (sections[by_section][:n_first] == first).all()
    with pytest.raises(si.SpatialImputeInputError, match="coords"):
        si.spatial_order(np.full((3, 2), np.nan))
    with pytest.raises(si.SpatialImputeInputError, match="sample_ids"):
        si.spatial_order(coords, sections[:5])
