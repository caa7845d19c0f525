"""method="auto": inner cross-validation, stacking, spatial refinement, calibrated reliability."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.stats

import spatialimpute as si
from spatialimpute._stats import spearman_columns
from spatialimpute._validation import SpatialImputeWarning
from spatialimpute.data.normalize import library_sizes, log_normalize
from spatialimpute.model.auto import ensemble_summary
from spatialimpute.model.auto.intervals import conformal_quantile
from spatialimpute.model.auto.refine import choose_smoothing
from spatialimpute.model.auto.stacking import combine, gene_bags, gene_moments, member_agreement, stack_weights

FAST = {"members": ("knn",), "num_threads": 1}


@pytest.fixture(scope="module")
def pair():
    spatial, reference, _ = si.datasets.simulate_pair(n_spatial=900, n_reference=1200, n_genes=150, n_panel=50, seed=3)
    held = list(spatial.var_names[::5])
    counts = np.asarray(spatial.X, dtype=np.float64)
    size = library_sizes(counts)
    truth = log_normalize(counts, size)[:, [list(spatial.var_names).index(g) for g in held]]
    train = spatial[:, [g for g in spatial.var_names if g not in held]].copy()
    train.obs["library_size"] = size
    return train, reference, held, truth


def test_stacking_weights_planted():
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(400, 30))
    good = truth + rng.normal(scale=0.5, size=truth.shape)
    bad = rng.normal(size=truth.shape)
    shrunk_good = 0.1 * good + 3.0  # same ranking as `good` on another scale
    w = stack_weights(truth, [bad, good])
    assert w[1] > 0.9 and w.sum() == pytest.approx(1.0)
    # the common scale: a shrunk copy of the good member is as good as the member itself
    w = stack_weights(truth, [shrunk_good, bad])
    assert w[0] > 0.9


def test_stacking_drops_negligible_members_and_refits_the_others():
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(400, 30))
    good = truth + rng.normal(scale=0.5, size=truth.shape)
    other = truth + rng.normal(scale=1.0, size=truth.shape)
    faint = truth + rng.normal(scale=100.0, size=truth.shape)  # weight about 0.003 when fitted
    w = stack_weights(truth, [good, faint, other])
    assert w[1] == 0.0
    np.testing.assert_allclose(w[[0, 2]], stack_weights(truth, [good, other]))
    assert w[2] > 0.1


def test_stacking_maximises_the_mean_correlation_with_the_measured_ranks_over_gene_bags():
    """Checked against a direct search: per bootstrap sample of the genes, the point of a
    fine grid on the simplex whose combination has the highest mean (over the bag's genes, as
    drawn) Pearson correlation with the ranks of the measurement; averaged over the bags."""
    rng = np.random.default_rng(3)
    signal = rng.normal(size=(120, 12))
    truth = np.exp(signal)  # skewed: its ranks are the signal's, its values are not
    preds = [signal + rng.normal(scale=s, size=signal.shape) for s in (0.8, 1.2, 2.0)]
    # the second member is close to the largest values but orders the bulk of the cells poorly:
    # a fit to the measured values (not their ranks) would give it 0.41, this one about 0.16
    preds[1] = truth + rng.normal(scale=1.0, size=truth.shape)
    preds[1][:, :4] = rng.normal(size=(120, 4))  # and misses four genes
    z = lambda x: (x - x.mean(0)) / x.std(0)  # noqa: E731
    ranks = z(scipy.stats.rankdata(truth, axis=0))
    step = np.arange(0, 101) / 100
    grid = np.array([(a, b, 1 - a - b) for a in step for b in step if a + b <= 1 + 1e-9])
    combos = np.einsum("pm,mcg->pcg", grid, np.stack([z(p) for p in preds]))
    corr = (z(combos.transpose(1, 0, 2).reshape(120, -1)).reshape(120, len(grid), 12) * ranks[:, None, :]).mean(0)
    expected = np.mean([grid[np.argmax(corr @ counts)] for counts in gene_bags(truth.shape[1], seed=7)], axis=0)
    assert expected.min() > 0.05  # every member keeps weight, so no refit enters the comparison
    np.testing.assert_allclose(stack_weights(truth, preds, seed=7), expected, atol=0.01)


def test_member_agreement_is_the_weighted_mean_correlation():
    rng = np.random.default_rng(2)
    shared = rng.normal(size=(500, 4))
    noise = [0.0, 0.5, 1.0, 3.0]  # gene j: members share the signal, with noise of this SD
    members = [shared + rng.normal(size=shared.shape) * np.array(noise) for _ in range(3)]
    weights = np.array([0.5, 0.3, 0.2])
    moments = [gene_moments(x) for x in members]
    combined_sd = gene_moments(combine(members, [m for m, _ in moments], [s for _, s in moments], weights))[1]
    agreement = member_agreement(combined_sd, weights)
    expected = []
    for g in range(4):
        r = np.corrcoef([x[:, g] for x in members])
        pairs = [(i, j) for i in range(3) for j in range(3) if i != j]
        expected.append(sum(weights[i] * weights[j] * r[i, j] for i, j in pairs)
                        / sum(weights[i] * weights[j] for i, j in pairs))
    np.testing.assert_allclose(agreement, expected, atol=1e-5)
    assert agreement[0] == pytest.approx(1.0, abs=1e-5) and np.all(np.diff(agreement) < 0)
    np.testing.assert_array_equal(member_agreement(np.full(3, 0.7), np.array([1.0])), 1.0)


def test_smoothing_chosen_only_when_it_helps():
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 10, size=(600, 2))
    smooth_truth = np.column_stack([np.sin(xy[:, 0] + i) + np.cos(xy[:, 1] * (1 + i / 10)) for i in range(20)])
    noisy_prediction = smooth_truth + rng.normal(scale=1.0, size=smooth_truth.shape)
    sections = np.zeros(600, dtype=np.int64)
    chosen, _ = choose_smoothing(smooth_truth, noisy_prediction, xy, sections)
    assert chosen["strength"] > 0 and chosen["spcc"] > chosen["grid"][0][2] + 0.1
    # truth without spatial structure: smoothing cannot help, none is kept
    iid_truth = rng.normal(size=(600, 20))
    chosen, _ = choose_smoothing(iid_truth, iid_truth + rng.normal(scale=1.0, size=iid_truth.shape), xy, sections)
    assert chosen["strength"] == 0


def test_conformal_quantile_covers():
    scores = np.arange(1, 101, dtype=float)
    assert conformal_quantile(scores, 0.8) == 81.0  # ceil(101 * 0.8) = 81st smallest
    assert conformal_quantile(scores, 0.99) == 100.0


def test_auto_end_to_end(pair):
    train, reference, held, truth = pair
    out = si.impute(train, reference, genes=held, library_size_key="library_size", members=("knn", "stimpute"),
                    num_threads=1)
    prov = out.uns["spatialimpute"]
    assert prov["method"] == "auto"
    table = ensemble_summary(out)
    assert set(table.index) == {"stimpute", "knn_k15_uniform", "knn_k15_similarity", "knn_k50_uniform",
                                "knn_k50_similarity"}
    assert table["weight"].sum() == pytest.approx(1.0) and (table["weight"] >= 0).all()
    spcc = spearman_columns(truth, np.asarray(out.X)).mean()
    assert spcc > 0.2
    # the ensemble is not worse than its members' inner-CV scores by much on the outer genes
    assert spcc > table["inner_spcc"].max() - 0.1
    for column in ("reliability", "reliability_lower", "reliability_upper"):
        assert np.isfinite(out.var[column]).all()
    assert (out.var["reliability_lower"] <= out.var["reliability_upper"]).all()
    lower, upper = out.layers["lower"], out.layers["upper"]
    assert (lower <= out.X).all() and (out.X <= upper).all() and (lower >= 0).all()
    coverage = ((truth >= lower) & (truth <= upper)).mean()
    assert 0.6 < coverage < 0.97
    assert prov["auto"]["smoothing"]["strength"] in (0.0, 0.25, 0.5, 0.75, 1.0)
    assert "morans_i_measured" in prov["auto"]["smoothing"]


def test_default_method_is_auto(pair):
    train, reference, held, _ = pair
    out = si.impute(train, reference, genes=held[:3], **FAST)
    assert out.uns["spatialimpute"]["method"] == "auto"


def test_auto_save_load_same_numbers(pair, tmp_path):
    train, reference, held, _ = pair
    model = si.AutoImpute(train, reference, genes=held, library_size_key="library_size", seed=1, **FAST)
    first = model.impute()
    model.save(tmp_path / "auto")
    loaded = si.AutoImpute.load(tmp_path / "auto", train, reference, num_threads=1)
    again = loaded.impute()
    np.testing.assert_allclose(np.asarray(again.X), np.asarray(first.X), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(again.layers["upper"], first.layers["upper"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(again.var["reliability"], first.var["reliability"], atol=1e-9)


def test_auto_blocks_and_zarr_match_memory(pair, tmp_path):
    train, reference, held, _ = pair
    model = si.AutoImpute(train, reference, genes=held, library_size_key="library_size", **FAST)
    whole = model.impute()
    with pytest.warns(SpatialImputeWarning, match="not in spatial order"):
        stored = model.impute(tmp_path / "out.zarr", block_size=128)
    np.testing.assert_allclose(np.asarray(stored.X), np.asarray(whole.X), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(stored.layers["lower"]), whole.layers["lower"], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_auto_through_a_distributed_cluster_writes_the_same_store(pair, tmp_path):
    """Also: the cells are not in spatial order, and the user sees the warning, not the workers' logs."""
    distributed = pytest.importorskip("distributed")
    train, reference, held, _ = pair
    model = si.AutoImpute(train, reference, genes=held, library_size_key="library_size",
                          members=("knn", "stimpute"), num_threads=1).train()
    whole = model.impute()
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  host="127.0.0.1") as cluster, distributed.Client(cluster) as client:
        with pytest.warns(SpatialImputeWarning, match="not in spatial order"):
            stored = model.impute(tmp_path / "out.zarr", block_size=128, scheduler=client)
        assert len(client.has_what()) == 2
    assert stored.uns["spatialimpute"]["prediction"]["scheduler"].startswith("distributed:")
    for layer in (None, "lower", "upper"):
        a = stored.X if layer is None else stored.layers[layer]
        b = whole.X if layer is None else whole.layers[layer]
        # float32 sums over other sets of rows (blocks of 128 cells against one block) differ in the last digits
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
    # the members' agreement is summed over blocks in the order the workers return them
    np.testing.assert_allclose(stored.var["reliability"], whole.var["reliability"], atol=1e-6)


def test_auto_scans_each_member_over_the_cells_its_own_rule_picks(pair, monkeypatch):
    """A member's global statistics (stImpute's blend maxima) come from the cells its own
    ``_scan_cells`` picks (a sample on large data), as when it runs alone, not from every cell."""
    train, reference, held, _ = pair
    model = si.AutoImpute(train, reference, genes=held[:3], library_size_key="library_size", members=("stimpute",),
                          num_threads=1).train()
    member = model._members["stimpute"]
    picked, seen, scan = np.arange(0, train.n_obs, 3), [], member._scan_block
    monkeypatch.setattr(member, "_scan_cells", lambda order, size: picked)
    monkeypatch.setattr(member, "_scan_block", lambda cells: seen.append(np.array(cells)) or scan(cells))
    model._cache.pop("member_stats")
    model._member_stats()
    np.testing.assert_array_equal(np.concatenate(seen), picked)


def test_auto_warns_when_blocks_repeat_their_neighbours_work(pair):
    """Cells in no spatial order: every block needs its members' rows of far more cells
    than its own (their spatial neighbours), and the user is told to sort them; sorted by
    :func:`si.spatial_order`, blocks need little beyond their own cells."""
    train, reference, held, _ = pair
    model = si.AutoImpute(train, reference, genes=held[:3], library_size_key="library_size", **FAST).train()
    with warnings.catch_warnings():
        warnings.simplefilter("error", SpatialImputeWarning)
        one_block = model.impute()
    with pytest.warns(SpatialImputeWarning, match="not in spatial order"):
        blocked = model.impute(block_size=64)
    np.testing.assert_allclose(np.asarray(blocked.X), np.asarray(one_block.X), rtol=1e-5, atol=1e-6)
    # sorted by position, the blocks' neighbours are mostly their own cells
    ordered = train[si.spatial_order(train.obsm["spatial"])].copy()
    sorted_model = si.AutoImpute(ordered, reference, genes=held[:3], library_size_key="library_size", **FAST).train()
    with warnings.catch_warnings():
        warnings.simplefilter("error", SpatialImputeWarning)
        sorted_model.impute(block_size=300)


def test_auto_without_reliability(pair):
    train, reference, held, _ = pair
    out = si.impute(train, reference, genes=held[:4], reliability=False, **FAST)
    assert not out.layers and np.isnan(out.var["reliability"]).all()


@pytest.mark.parametrize("options", [
    {"members": ()}, {"members": ("knn", "knn")}, {"members": ("tangram",)}, {"members": "knn"},
    {"inner_folds": 1}, {"interval_level": 1.5}, {"knn_neighbors": (0,)},
])
def test_auto_bad_options(pair, options):
    train, reference, held, _ = pair
    with pytest.raises(si.SpatialImputeInputError):
        si.AutoImpute(train, reference, genes=held, **{"num_threads": 1, **options})


def test_ensemble_figure(pair, tmp_path):
    train, reference, held, _ = pair
    out = si.impute(train, reference, genes=held[:3], **FAST)
    path = tmp_path / "choice.png"
    si.plotting.save_figure(si.plotting.ensemble_choice(out, title="auto"), path)
    assert path.stat().st_size > 5000
    with pytest.raises(si.SpatialImputeInputError):
        si.ensemble_summary(si.impute(train, reference, genes=held[:3], method="knn"))


def test_parallel_inner_cv_matches_sequential(pair):
    """Two worker processes (num_threads=2) score the candidates exactly as one process does."""
    train, reference, held, _ = pair
    runs = [si.AutoImpute(train, reference, genes=held[:4], members=("knn", "mapping"), num_threads=threads).train()
            for threads in (1, 2)]
    one, two = (run.fit_info["members"] for run in runs)
    assert one.keys() == two.keys()
    for name in one:
        assert one[name]["inner_spcc"] == pytest.approx(two[name]["inner_spcc"], abs=1e-6)
        assert one[name]["weight"] == pytest.approx(two[name]["weight"], abs=1e-6)


def test_residual_propagation_planted():
    """Genes sharing a cell-level signal the members miss: borrowing residuals recovers it."""
    from spatialimpute.model.auto.refine import choose_residual_propagation, propagate_residuals, residual_graph

    rng = np.random.default_rng(2)
    reference_program = rng.normal(size=(500, 1))
    reference = reference_program @ np.ones((1, 12)) + 0.3 * rng.normal(size=(500, 12))
    cell_signal = rng.normal(size=(400, 1))
    truth = cell_signal @ np.ones((1, 12)) + 0.3 * rng.normal(size=(400, 12))
    missed = 0.2 * truth + rng.normal(size=truth.shape)  # predictions that mostly miss the shared signal
    chosen = choose_residual_propagation(truth, missed, reference)
    assert chosen["strength"] > 0 and chosen["spcc"] > chosen["grid"][0][1] + 0.2
    graph = residual_graph(reference, reference, exclude_self=True)
    assert graph.diagonal().sum() == 0 and np.allclose(graph.sum(axis=0), 1.0)
    assert propagate_residuals(truth - missed, graph).shape == truth.shape
    # unrelated genes: nothing to borrow, strength 0
    independent = rng.normal(size=(400, 12))
    chosen = choose_residual_propagation(independent, 0.5 * independent + rng.normal(size=independent.shape),
                                         rng.normal(size=(500, 12)))
    assert chosen["strength"] == 0


def test_auto_output_is_non_negative_with_finite_reliability(pair):
    train, reference, held, _ = pair
    out = si.impute(train, reference, genes=held, library_size_key="library_size", **FAST)
    assert (np.asarray(out.X) >= 0).all() and np.isfinite(out.var.filter(like="reliability")).all().all()
