"""Spatial radius graph, cosine feature kNN graph and propagation matrices."""

import numpy as np
import pytest
import torch

from spatialimpute.data.spatial_graph import (
    cosine_knn_indices,
    feature_knn_graph,
    radius_for_mean_degree,
    radius_graph,
    row_normalized_propagation,
    spatial_radius_graph,
)


def test_radius_rule_on_grid():
    """On a unit grid, degree 4 means the 4-neighbourhood: r in (1, sqrt 2]."""
    xy = np.array([(i, j) for i in range(30) for j in range(30)], dtype=float)
    g, r = spatial_radius_graph(xy, 4.0)
    assert 1.0 < r <= np.sqrt(2.0)
    interior = np.array([i * 30 + j for i in range(1, 29) for j in range(1, 29)])
    assert (np.asarray(g[interior].sum(axis=1)).ravel() == 4).all()
    assert g.nnz == 2 * 2 * 30 * 29  # every horizontal and vertical pair, both directions: mean 3.87


@pytest.mark.parametrize("target", [2.0, 4.0, 8.0])
def test_radius_rule_random_points(target):
    xy = np.random.default_rng(0).uniform(0, 100, size=(2000, 2))
    r = radius_for_mean_degree(xy, target)
    g = radius_graph(xy, r)
    assert abs(g.nnz / 2000 - target) < 0.01
    assert (g != g.T).nnz == 0 and g.diagonal().sum() == 0


def test_radius_graph_is_strict():
    xy = np.array([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]])
    assert radius_graph(xy, 1.0).nnz == 0
    assert radius_graph(xy, 1.5).nnz == 2


def test_feature_knn_graph_symmetric_cosine():
    rng = np.random.default_rng(0)
    centers = rng.uniform(size=(3, 10))
    X = np.repeat(centers, 20, axis=0) + 0.01 * rng.uniform(size=(60, 10))
    idx = cosine_knn_indices(X, 5, max_block_entries=100)  # several blocks
    assert (idx != np.arange(60)[:, None]).all()
    assert (idx // 20 == np.arange(60)[:, None] // 20).all()  # neighbours from the same group
    g = feature_knn_graph(X, 5)
    assert (g != g.T).nnz == 0 and g.diagonal().sum() == 0
    assert (np.asarray(g.sum(axis=1)).ravel() >= 5).all() and set(np.unique(g.data)) == {1.0}


def test_row_normalized_propagation():
    xy = np.random.default_rng(1).uniform(size=(50, 2))
    g = radius_graph(xy, 0.2)
    a = row_normalized_propagation(g)
    assert a.is_sparse
    dense = a.to_dense().numpy()
    np.testing.assert_allclose(dense.sum(axis=1), 1.0, rtol=1e-6)
    expected = g.toarray() + np.eye(50)
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(dense, expected, rtol=1e-6)
    x = torch.rand(50, 3)
    torch.testing.assert_close(torch.sparse.mm(a, x), torch.as_tensor(expected, dtype=torch.float32) @ x)


def test_bad_inputs():
    with pytest.raises(ValueError, match="coords"):
        radius_for_mean_degree(np.array([[0.0, np.nan], [1.0, 1.0], [2.0, 2.0]]))
    with pytest.raises(ValueError, match="target_degree"):
        radius_for_mean_degree(np.random.default_rng(0).uniform(size=(5, 2)), 10)
    with pytest.raises(ValueError, match="radius"):
        radius_graph(np.zeros((3, 2)), -1.0)
    with pytest.raises(ValueError, match="k"):
        cosine_knn_indices(np.ones((3, 2)), 3)
