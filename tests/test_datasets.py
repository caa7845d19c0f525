"""The simulator: shapes, count properties, batch effects, and that it is learnable."""

from __future__ import annotations

import numpy as np
import pytest

from spatialimpute._validation import SpatialImputeInputError
from spatialimpute.benchmark import gene_metrics
from spatialimpute.datasets import simulate_pair


def test_shapes_and_metadata(small_pair):
    spatial, reference, truth = small_pair
    assert spatial.shape == (400, 30) and reference.shape == (600, 80) and truth.shape == (400, 80)
    assert set(spatial.var_names) <= set(reference.var_names)
    assert truth.var["in_panel"].sum() == 30
    assert list(truth.var_names[truth.var["in_panel"]]) == list(spatial.var_names)
    assert spatial.obsm["spatial"].shape == (400, 2)
    assert {"cell_type", "domain"} <= set(spatial.obs) and "cell_type" in reference.obs
    assert list(truth.obs_names) == list(spatial.obs_names)


def test_counts_are_integer_negative_binomial_with_dropout(small_pair):
    spatial, reference, _ = small_pair
    for X in (np.asarray(spatial.X), np.asarray(reference.X)):
        assert (X >= 0).all() and np.array_equal(X, np.round(X))
        assert (X == 0).mean() > 0.05  # zeros from sampling and dropout
        mean, var = X.mean(axis=0), X.var(axis=0)
        expressed = mean > 1
        assert (var[expressed] > mean[expressed]).mean() > 0.9  # over-dispersed
    assert (np.asarray(spatial.X) == 0).mean() > 0.2  # a shallow, sparse imaging panel
    # different depth: the reference is sequenced deeper per gene
    assert np.asarray(reference.X).sum(1).mean() / 80 > np.asarray(spatial.X).sum(1).mean() / 30


def test_truth_matches_the_measured_panel(small_pair):
    spatial, _, truth = small_pair
    # the panel part of the truth is the measurement itself (up to normalisation)
    rho = gene_metrics(truth[:, spatial.var_names].X, np.log1p(np.asarray(spatial.X)))["spcc"]
    assert rho.min() > 0.9


def test_spatial_structure_and_types(small_pair):
    spatial, _, truth = small_pair
    expected = truth.layers["expected"]
    types = spatial.obs["cell_type"].to_numpy()
    # cell types explain expression: between-type variance is a large share for marker genes
    group_means = np.stack([expected[types == t].mean(0) for t in np.unique(types)])
    assert group_means.std(axis=0).max() > 1.0
    # gradient genes vary with position within a type
    grad = truth.var["spatial_gradient"].to_numpy()
    assert grad.any()


def test_deterministic():
    a = simulate_pair(n_spatial=50, n_reference=60, n_genes=30, n_panel=10, seed=3)
    b = simulate_pair(n_spatial=50, n_reference=60, n_genes=30, n_panel=10, seed=3)
    c = simulate_pair(n_spatial=50, n_reference=60, n_genes=30, n_panel=10, seed=4)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(np.asarray(x.X), np.asarray(y.X))
    assert not np.array_equal(np.asarray(a[0].X), np.asarray(c[0].X))


def test_learnable_and_mean_scores_zero(small_pair):
    import spatialimpute as si

    spatial, reference, truth = small_pair
    out = si.impute(spatial, reference, method="knn", reliability=False)
    measured = truth[:, out.var_names].X
    assert gene_metrics(measured, out.X)["spcc"].mean() > 0.15
    flat = np.broadcast_to(measured.mean(axis=0), measured.shape)
    assert gene_metrics(measured, flat)["spcc"].abs().max() == 0


def test_bad_arguments():
    with pytest.raises(SpatialImputeInputError, match="n_panel"):
        simulate_pair(n_genes=10, n_panel=10)
