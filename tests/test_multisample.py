"""Several tissue sections in one object: spatial graphs never connect cells of different
sections, even where their coordinates overlap; results keep the caller's cell order."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import spatialimpute as si
from spatialimpute._validation import SpatialImputeInputError, prepare_pair
from spatialimpute.data.spatial_graph import radius_for_mean_degree, radius_graph, section_knn, spatial_radius_graph
from spatialimpute.datasets import simulate_pair


def _two_sections(seed=0, n=150):
    """A simulated pair whose spatial cells are split into two interleaved sections that
    share one coordinate frame (the second section's cells sit 0.01 units from the first's)."""
    spatial, reference, _ = simulate_pair(n_spatial=2 * n, n_reference=300, n_genes=30, n_panel=20, seed=seed)
    xy = spatial.obsm["spatial"].copy()
    section = np.where(np.arange(2 * n) % 2 == 0, "slice_a", "slice_b")
    xy[section == "slice_b"] = xy[section == "slice_a"] + 0.01  # overlapping sections
    spatial.obsm["spatial"] = xy
    spatial.obs["section"] = section
    return spatial, reference, section


def _crosses(graph, ids) -> int:
    coo = graph.tocoo()
    return int((ids[coo.row] != ids[coo.col]).sum())


def test_prepare_pair_records_sections_in_cell_order():
    spatial, reference, section = _two_sections()
    paired = prepare_pair(spatial, reference, sample_key="section")
    assert paired.n_sections == 2
    np.testing.assert_array_equal(paired.sample_ids, (section == "slice_b").astype(np.int64))
    assert prepare_pair(spatial, reference).n_sections == 1


def test_sample_key_errors_name_the_argument():
    spatial, reference, _ = _two_sections()
    with pytest.raises(SpatialImputeInputError, match="sample_key"):
        prepare_pair(spatial, reference, sample_key="slide")
    spatial.obs.loc[spatial.obs_names[3], "section"] = None
    with pytest.raises(SpatialImputeInputError, match="sample_key.*1 cells"):
        prepare_pair(spatial, reference, sample_key="section")


def test_radius_graph_is_block_diagonal_over_overlapping_sections():
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 30, size=(400, 2))
    both = np.vstack([xy, xy + 0.01])
    ids = np.repeat([0, 1], 400)
    merged, _ = spatial_radius_graph(both, 4.0)
    assert _crosses(merged, ids) > 0  # without sections the copies connect
    g, r = spatial_radius_graph(both, 4.0, ids)
    assert _crosses(g, ids) == 0
    # each section gets exactly the graph it would get alone, at the radius of one copy
    assert r == pytest.approx(radius_for_mean_degree(xy, 4.0))
    alone = radius_graph(xy, r)
    assert (g[:400, :400] != alone).nnz == 0 and (g[400:, 400:] != radius_graph(xy + 0.01, r)).nnz == 0


def test_section_knn_stays_in_section():
    rng = np.random.default_rng(2)
    xy = rng.uniform(0, 10, size=(60, 2))
    ids = rng.integers(0, 3, 60)
    idx = section_knn(np.vstack([xy]), 5, ids)
    assert idx.shape == (60, 5)
    assert (ids[idx] == ids[:, None]).all() and (idx != np.arange(60)[:, None]).all()


def test_stgnet_refinement_graph_respects_sections():
    spatial, reference, section = _two_sections()
    model = si.STGNET(spatial, reference, sample_key="section", device="cpu")
    features = torch.randn(spatial.n_obs, 4)
    _, _, edges, info = model._graphs(features)
    ids = (section == "slice_b").astype(np.int64)
    e = edges.numpy()
    assert e.shape[1] > 0 and (ids[e[0]] == ids[e[1]]).all()
    cells = np.arange(0, spatial.n_obs, 3)  # a subset (as in the held-out folds)
    e = model._graphs(features[cells], cells)[2].numpy()
    assert (ids[cells][e[0]] == ids[cells][e[1]]).all()


def test_impute_with_sections_keeps_cell_order():
    spatial, reference, _ = _two_sections()
    order = np.random.default_rng(3).permutation(spatial.n_obs)
    shuffled = spatial[order].copy()
    before = shuffled.copy()
    out = si.impute(shuffled, reference, method="knn", sample_key="section", seed=0)
    assert list(out.obs_names) == list(shuffled.obs_names)
    np.testing.assert_array_equal(out.obsm["spatial"], shuffled.obsm["spatial"])
    assert (shuffled.obs["section"] == before.obs["section"]).all()  # input untouched
    assert np.isfinite(out.X).all()


def test_saved_model_refuses_other_sections(tmp_path):
    from spatialimpute import SpatialImputeInputError
    from spatialimpute.model.knn import KNNImpute

    spatial, reference, _ = _two_sections()
    KNNImpute(spatial, reference, k=10, sample_key="section", device="cpu").train().save(tmp_path / "m")
    assert KNNImpute.load(tmp_path / "m", spatial, reference, device="cpu").impute().n_obs == spatial.n_obs
    moved = spatial.copy()
    moved.obs["section"] = np.where(np.arange(moved.n_obs) < 10, "slice_b", moved.obs["section"])
    with pytest.raises(SpatialImputeInputError, match="sample ids"):
        KNNImpute.load(tmp_path / "m", moved, reference, device="cpu")
