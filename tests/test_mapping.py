"""Mapping member: planted answers, the loss algebra, options, clusters, blocks and save/load."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import spatialimpute as si
from spatialimpute.benchmark import gene_metrics
from spatialimpute.model.mapping import MappingImpute, cluster_means, cluster_reference
from spatialimpute.module.mapping import MappingProblem, fit_mapping, mapping_weights

FAST = {"steps": 30}


@pytest.fixture(scope="module")
def mapped(small_pair):
    spatial, reference, _ = small_pair
    model = MappingImpute(spatial, reference, seed=0, device="cpu", **FAST).train()
    return model, model.impute()


def test_planted_answer_recovery_beats_depth_baseline(small_pair, mapped):
    spatial, reference, truth = small_pair
    model, out = mapped
    targets = [g for g in reference.var_names if g not in set(spatial.var_names)]
    assert list(out.obs_names) == list(spatial.obs_names) and list(out.var_names) == targets
    spcc = gene_metrics(truth[:, targets].X, out.X)["spcc"]
    # trivial baseline: every gene ranks cells by their mean log panel expression (sequencing depth)
    depth = np.repeat(np.asarray(model.paired.spatial_X).mean(axis=1, keepdims=True), len(targets), axis=1)
    baseline = gene_metrics(truth[:, targets].X, depth)["spcc"]
    assert spcc.mean() > 0.2 and spcc.max() > 0.5
    assert spcc.mean() > np.nanmean(baseline) + 0.1
    rel = out.var["reliability"].to_numpy()
    assert np.isfinite(rel).all() and ((rel >= 0) & (rel <= 1)).all()
    prov = out.uns["spatialimpute"]
    assert prov["method"] == "mapping" and prov["config"]["schedule"]["steps"] == 30
    assert set(model.history) == {"gene_similarity"}  # the reliability refits are not logged
    assert model.history["gene_similarity"][-1] > 0.5


def test_cell_normalised_mapping_also_recovers_the_answer(small_pair):
    spatial, reference, truth = small_pair
    out = si.impute(spatial, reference, method="mapping", normalize="cell", reliability=False, device="cpu", **FAST)
    assert np.isnan(out.var["reliability"]).all()
    assert gene_metrics(truth[:, out.var_names].X, out.X)["spcc"].mean() > 0.2


def test_loss_equals_the_direct_gene_cosines_in_both_directions():
    g = torch.Generator().manual_seed(0)
    X, S = torch.rand(50, 7, generator=g), torch.rand(6, 7, generator=g)
    X[:, 0] = 0  # a gene without signal is left out of the mean
    problem = MappingProblem(X, S)
    for shares in (None, torch.full((6,), 1 / 6)):
        logits = torch.randn((50, 6) if shares is None else (6, 50), generator=g)
        W = mapping_weights(logits, shares)
        assert W.shape == (50, 6)
        if shares is None:
            torch.testing.assert_close(W.sum(1), torch.ones(50))
        else:
            torch.testing.assert_close(W.sum(0), shares * 50)
        P = W @ S
        gene = torch.nn.functional.cosine_similarity(P[:, 1:], X[:, 1:], dim=0).mean()
        loss, logged = problem.loss(logits, shares)
        assert logged["gene_similarity"] == pytest.approx(float(gene), abs=1e-5)
        assert float(loss) == pytest.approx(-float(gene), abs=1e-5)


def test_fit_recovers_a_planted_mapping_and_batches_are_independent():
    rng = np.random.default_rng(0)
    S = torch.tensor(rng.gamma(1.0, size=(5, 20)), dtype=torch.float32)
    truth = rng.integers(0, 5, 300)
    X = S[truth] * torch.tensor(rng.uniform(0.8, 1.2, size=(300, 1)), dtype=torch.float32)
    W = fit_mapping(X, S, steps=200, lr=0.1, batch_size=1000)
    assert (W.argmax(1).numpy() == truth).mean() > 0.95
    batched = fit_mapping(X, S, steps=200, lr=0.1, batch_size=100, seed=3)
    assert (batched.argmax(1).numpy() == truth).mean() > 0.95
    torch.testing.assert_close(batched.sum(1), torch.ones(300))


def test_clusters_rule_labels_and_single_cells(small_pair):
    spatial, reference, _ = small_pair
    model = MappingImpute(spatial, reference, device="cpu")
    assert model._cluster_count() == math.ceil(math.sqrt(reference.n_obs))
    assert MappingImpute(spatial, reference, max_clusters=7)._cluster_count() == 7
    assert MappingImpute(spatial, reference, n_clusters=10_000)._cluster_count() == reference.n_obs
    X = model.paired.reference_features
    labels = np.asarray(model.paired.reference_labels.codes) if model.paired.reference_labels is not None else None
    assert labels is None  # no reference_labels_key: k-means
    codes = reference.obs["cell_type"].astype("category").cat.codes.to_numpy()
    assignment = cluster_reference(X, 12, codes, seed=0)
    assert set(np.unique(assignment)) == set(range(assignment.max() + 1))
    for c in np.unique(assignment):  # every cluster lies within one label
        assert len(np.unique(codes[assignment == c])) == 1
    np.testing.assert_array_equal(cluster_reference(X, X.shape[0]), np.arange(X.shape[0]))
    means = cluster_means(assignment, X)
    np.testing.assert_allclose(means[0], X[assignment == 0].mean(0), rtol=1e-5, atol=1e-6)
    by_label = MappingImpute(spatial, reference, reference_labels_key="cell_type", device="cpu", reliability=False,
                             **FAST).train()
    assert len(np.unique(by_label._assignment)) >= reference.obs["cell_type"].nunique()


@pytest.mark.parametrize("options, message", [
    ({"n_clusters": 0}, "n_clusters"),
    ({"max_clusters": -1}, "max_clusters"),
    ({"clusters": "leiden"}, "clusters"),
    ({"clusters": "labels"}, "clusters"),  # no reference_labels_key
    ({"normalize": "spot"}, "normalize"),
    ({"steps": 0}, "steps"),
    ({"lr": 0}, "lr"),
    ({"batch_size": 1}, "batch_size"),
    ({"reliability": "yes"}, "reliability"),
    ({"temperature": 1}, "params"),
])
def test_bad_options_are_refused(small_pair, options, message):
    spatial, reference, _ = small_pair
    with pytest.raises(si.SpatialImputeInputError, match=f"^`{message}`"):
        MappingImpute(spatial, reference, **options)


def test_blocks_equal_whole_and_same_seed_same_numbers(small_pair, mapped):
    spatial, reference, _ = small_pair
    model, out = mapped
    blocked = model.impute(block_size=37)
    np.testing.assert_array_equal(blocked.X, out.X)
    cells = np.array([5, 0, 399, 17])
    np.testing.assert_allclose(model._predict_block(cells, None), out.X[cells], rtol=1e-6)
    again = MappingImpute(spatial, reference, seed=0, device="cpu", **FAST).train().impute()
    np.testing.assert_array_equal(again.X, out.X)
    np.testing.assert_array_equal(again.var["reliability"], out.var["reliability"])


def test_save_load_round_trip(small_pair, mapped, tmp_path):
    spatial, reference, _ = small_pair
    model, out = mapped
    model.save(tmp_path / "m")
    loaded = MappingImpute.load(tmp_path / "m", spatial, reference, device="cpu")
    assert loaded.schedule.steps == 30 and loaded.is_trained
    again = loaded.impute()
    np.testing.assert_array_equal(again.X, out.X)
    # other cell and reference orders: results follow the caller's cells
    rng = np.random.default_rng(0)
    sp, ref = spatial[rng.permutation(spatial.n_obs)].copy(), reference[rng.permutation(reference.n_obs)].copy()
    shuffled = MappingImpute.load(tmp_path / "m", sp, ref, device="cpu").impute()
    assert list(shuffled.obs_names) == list(sp.obs_names)
    np.testing.assert_allclose(shuffled[out.obs_names].X, out.X, rtol=1e-5, atol=1e-6)
    with pytest.raises(si.SpatialImputeInputError, match="panel genes"):
        MappingImpute.load(tmp_path / "m", spatial[:, 1:].copy(), reference)


def test_damaged_state_is_refused(small_pair, mapped):
    spatial, reference, _ = small_pair
    model, _ = mapped
    state = model._state_dict()
    fresh = MappingImpute(spatial, reference, device="cpu")
    with pytest.raises(si.SpatialImputeInputError, match="^`path`"):
        fresh._load_state_dict({"weights": state["weights"][:-1], "assignment": state["assignment"]})
    bad = state["assignment"].clone()
    bad[bad == 0] = 1  # cluster 0 left empty
    with pytest.raises(si.SpatialImputeInputError, match="^`path`"):
        fresh._load_state_dict({"weights": state["weights"], "assignment": bad})
