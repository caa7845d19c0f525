"""kNN baseline, neighbour search, reliability, determinism and save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import spatialimpute as si
from spatialimpute.benchmark import gene_metrics
from spatialimpute.data.neighbors import knn_cosine, neighbor_mean, spatial_knn, weighted_neighbor_mean
from spatialimpute.data import neighbors as knn_module
from spatialimpute.data.neighbors import JointEmbedding, neighbor_weights
from spatialimpute.model.knn import KNNImpute
from spatialimpute.reliability import GeneReliability, morans_i, reliability_from_heldout


def test_knn_cosine_matches_brute_force_and_chunks():
    rng = np.random.default_rng(0)
    q, r = rng.normal(size=(37, 5)), rng.normal(size=(53, 5))
    idx, dist = knn_cosine(q, r, 4, chunk_size=7)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    rn = r / np.linalg.norm(r, axis=1, keepdims=True)
    d = 1 - qn @ rn.T
    np.testing.assert_array_equal(idx.numpy(), np.argsort(d, axis=1)[:, :4])
    np.testing.assert_allclose(dist.numpy(), np.sort(d, axis=1)[:, :4], atol=1e-5)
    idx_self, _ = knn_cosine(r, r, 3, exclude_self=True, chunk_size=10)
    assert not (idx_self.numpy() == np.arange(53)[:, None]).any()


def test_joint_embedding_subsampled_pca_and_blockwise_projection(monkeypatch):
    rng = np.random.default_rng(0)
    latent = rng.normal(size=(200, 3))
    X = (latent @ rng.normal(size=(3, 40)) + 0.1 * rng.normal(size=(200, 40))).astype(np.float32)
    a, b = X[:120], X[120:]
    def joint_embedding(a, b, n, seed):
        fitted = JointEmbedding.fit(a, b, n, seed)
        return fitted.spatial(a), fitted.reference(b)

    full_a, full_b = joint_embedding(a, b, 5, seed=0)
    assert full_a.shape == (120, 5) and full_b.shape == (80, 5) and full_a.dtype == np.float32
    monkeypatch.setattr(knn_module, "_PCA_MAX_ROWS", 60)  # fit on 60 stacked cells, project in blocks
    sub_a, sub_b = joint_embedding(a, b, 5, seed=0)
    assert sub_a.shape == (120, 5) and sub_b.shape == (80, 5)
    # The three planted directions are found from the subset too: same top-3 subspace.
    def subspace(e):
        return np.linalg.svd(e[:, :3] - e[:, :3].mean(0), full_matrices=False)[0]
    overlap = np.linalg.svd(subspace(np.vstack([full_a, full_b])).T @ subspace(np.vstack([sub_a, sub_b])))[1]
    assert overlap.min() > 0.99


def test_spatial_knn_excludes_self_even_with_duplicates():
    coords = np.array([[0, 0], [0, 0], [1, 0], [5, 5], [5, 6.0]])
    idx = spatial_knn(coords, 2)
    assert idx.shape == (5, 2)
    assert not (idx == np.arange(5)[:, None]).any()
    assert set(idx[0]) == {1, 2} and idx[0, 0] == 1


def test_spatial_knn_in_query_chunks_equals_brute_force(monkeypatch):
    monkeypatch.setattr(knn_module, "_SPATIAL_QUERY_ROWS", 7)  # many chunks, the last one partial
    coords = np.random.default_rng(3).uniform(0, 10, size=(50, 2))
    idx = spatial_knn(coords, 4)
    distances = np.linalg.norm(coords[:, None] - coords[None], axis=2)
    np.fill_diagonal(distances, np.inf)
    np.testing.assert_array_equal(idx, np.argsort(distances, axis=1)[:, :4])
    assert idx.dtype == np.int32


def test_weighted_mean_equals_dense_gather():
    rng = np.random.default_rng(1)
    values = torch.tensor(rng.random((20, 6)), dtype=torch.float32)
    idx = torch.tensor(rng.integers(0, 20, (9, 4)))
    w = neighbor_weights(torch.tensor(rng.random((9, 4)), dtype=torch.float32), "similarity")
    torch.testing.assert_close(w.sum(1), torch.ones(9))
    expected = (w[..., None] * values[idx]).sum(1)
    torch.testing.assert_close(weighted_neighbor_mean(idx, w, values), expected)


def test_neighbor_mean_and_spread_equal_the_dense_gathers():
    """The neighbour mean (smoothing, Moran's I) and the local spread (auto's intervals) equal
    the (rows x k x genes) gathers they replace, for float32, float64 and read-only input."""
    from spatialimpute.model.auto.intervals import local_spread

    rng = np.random.default_rng(2)
    idx = rng.integers(0, 30, (12, 5))
    for values in (rng.random((30, 7)).astype(np.float32), rng.random((30, 7))):
        values.flags.writeable = False
        out = neighbor_mean(values, idx)
        assert out.dtype == values.dtype
        np.testing.assert_allclose(out, values[idx].mean(axis=1), rtol=1e-6)
        rows = rng.integers(0, 30, 12)
        stack = np.concatenate([values[rows][:, None, :], values[idx]], axis=1)
        np.testing.assert_allclose(local_spread(values, rows, idx), stack.std(axis=1), rtol=1e-5, atol=1e-7)


def test_planted_answer_recovery(small_pair):
    spatial, reference, truth = small_pair
    out = si.impute(spatial, reference, method="knn")
    assert list(out.obs_names) == list(spatial.obs_names)
    assert list(out.var_names) == [g for g in reference.var_names if g not in set(spatial.var_names)]
    metrics = gene_metrics(truth[:, out.var_names].X, out.X)
    assert metrics["spcc"].mean() > 0.2
    # marker genes of cell types are recovered far better than chance
    assert metrics["spcc"].max() > 0.5
    rel = out.var["reliability"].to_numpy()
    assert np.isfinite(rel).all() and ((rel >= 0) & (rel <= 1)).all()
    # calibrated: more reliable genes are more accurate
    top = rel >= np.median(rel)
    assert metrics["spcc"][top].mean() > metrics["spcc"].mean()
    prov = out.uns["spatialimpute"]
    assert prov["method"] == "knn" and prov["seed"] == 0 and prov["device"] == "cpu"
    assert prov["feature_genes"] == list(spatial.var_names)


def test_neighbours_of_a_larger_search_average_as_a_smaller_model(small_pair):
    """What lets auto's kNN members share one search: the first k of 50 neighbours are the k nearest."""
    spatial, reference, _ = small_pair
    wide = KNNImpute(spatial, reference, k=50, reliability=False, num_threads=1).train()
    cells = np.arange(spatial.n_obs)
    for weighting in ("uniform", "similarity"):
        narrow = KNNImpute(spatial, reference, k=15, weighting=weighting, reliability=False, num_threads=1).train()
        np.testing.assert_array_equal(narrow.average(*wide.neighbors(cells, 50)), narrow.impute().X)


def test_same_seed_same_output(small_pair):
    spatial, reference, _ = small_pair
    a = si.impute(spatial, reference, method="knn", seed=5)
    b = si.impute(spatial, reference, method="knn", seed=5)
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.var["reliability"], b.var["reliability"])


def test_save_load_round_trip(small_pair, tmp_path):
    spatial, reference, _ = small_pair
    model = KNNImpute(spatial, reference, k=20).train()
    out = model.impute()
    model.save(tmp_path / "model")
    loaded = KNNImpute.load(tmp_path / "model", spatial, reference)
    assert loaded.architecture.k == 20 and loaded.is_trained
    np.testing.assert_array_equal(loaded.impute().X, out.X)
    with pytest.raises(si.SpatialImputeInputError, match="panel genes"):
        KNNImpute.load(tmp_path / "model", spatial[:, 1:].copy(), reference)


def test_morans_i_and_ridge_reliability():
    coords = np.stack(np.meshgrid(np.arange(20), np.arange(20)), -1).reshape(-1, 2).astype(float)
    idx = spatial_knn(coords, 4)
    smooth = coords[:, :1]
    noise = np.random.default_rng(0).normal(size=(400, 1))
    i = morans_i(np.hstack([smooth, noise, np.ones((400, 1))]), idx)
    assert i[0] > 0.8 and abs(i[1]) < 0.15 and i[2] == 0
    X = np.random.default_rng(1).normal(size=(40, 3))
    y = 0.5 + 0.1 * X[:, 0]
    pred = GeneReliability(alpha=1e-6).fit(X, y).predict(X)
    np.testing.assert_allclose(pred, y, atol=1e-4)


def test_reliability_targets_as_a_function_of_cells(small_pair):
    """A function of the cell subset describes the targets exactly as the array would."""
    spatial, reference, _ = small_pair
    paired = KNNImpute(spatial, reference).paired
    rng = np.random.default_rng(0)
    noisy_panel = np.asarray(paired.spatial_X) + rng.normal(scale=0.5, size=paired.spatial_X.shape)
    targets = rng.gamma(1.0, size=(paired.n_cells, paired.n_targets))

    def predict_heldout(train, heldout, cells):
        return noisy_panel[np.ix_(cells, heldout)]

    asked = []

    def target_rows(cells):
        asked.append(cells)
        return targets[cells]

    max_cells = paired.n_cells // 2
    from_array = reliability_from_heldout(paired, predict_heldout, targets, max_cells=max_cells, seed=3)
    from_function = reliability_from_heldout(paired, predict_heldout, target_rows, max_cells=max_cells, seed=3)
    np.testing.assert_array_equal(from_function, from_array)
    assert len(asked) == 1 and asked[0].size == max_cells and from_array.shape == (paired.n_targets,)
