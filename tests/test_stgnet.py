"""STGNET through its public API: end to end on the simulator (planted answer), presets,
determinism, the cross-fold cache, save/load, panel extension, labels, bad options."""

import dataclasses

import numpy as np
import pytest

import spatialimpute as si
from spatialimpute._validation import SpatialImputeInputError
from spatialimpute.datasets import simulate_pair
from spatialimpute.model.stgnet import (
    PRESETS, STGNET, STGNETArchitecture, STGNETSchedule, clear_reference_cache, match_quantiles, stgnet_scale,
    stgnet_unscale,
)

#: Tiny but complete schedule: every stage runs.
TINY = dict(s1_steps=20, s2_steps=20, s3_steps=20, s2_panel_steps=20, batch_size=50, s5_epochs=15,
            g1_channels=[8, 4], unet_ngf=4, s5_hidden=[32, 16], refine=True, reliability=False, device="cpu")


@pytest.fixture(scope="module")
def sim():
    return simulate_pair(n_spatial=300, n_reference=400, n_genes=30, n_panel=24, n_cell_types=4, n_domains=3,
                         spatial_depth=400, seed=3)


def _panel_without(spatial, held):
    return spatial[:, [g for g in spatial.var_names if g not in set(held)]].copy()


def _spcc(pred, truth):
    from scipy.stats import spearmanr

    return np.array([spearmanr(pred[:, j], truth[:, j])[0] for j in range(pred.shape[1])])


@pytest.mark.slow
def test_planted_answer_recovery():
    """Held-out panel genes of a simulated tissue are recovered (positive SPCC), with
    reliability scores in [0, 1]."""
    spatial, reference, truth = simulate_pair(n_spatial=300, n_reference=400, n_genes=30, n_panel=24, n_cell_types=4,
                                              n_domains=3, spatial_depth=150, reference_depth=150, batch_shift=0.0,
                                              seed=3)
    held = list(spatial.var_names[::4])
    out = STGNET(spatial, reference, genes=held, seed=0, labels_key="cell_type", reference_labels_key="cell_type",
                 **{**TINY, "s2_steps": 150, "s3_steps": 150, "g1_channels": [32, 16], "unet_ngf": 8,
                    "s5_epochs": 40, "reliability": True}).impute()
    assert out.shape == (spatial.n_obs, len(held))
    assert list(out.var_names) == held and out.var["in_panel"].all()
    assert np.isfinite(out.X).all() and (out.X >= 0).all()
    spcc = _spcc(out.X, truth[:, held].X)
    assert np.nanmean(spcc) > 0.08, spcc
    reliability = out.var["reliability"].to_numpy()
    assert np.isfinite(reliability).all() and ((reliability >= 0) & (reliability <= 1)).all()


def test_fast_preset_by_default_through_impute(sim):
    """``si.impute`` trains the fast preset, stops at stage 4 and records the resolved
    configuration in the provenance."""
    spatial, reference, _ = sim
    held = list(spatial.var_names[:4])
    tiny = {k: v for k, v in TINY.items() if k not in ("refine", "device")}
    out = si.impute(_panel_without(spatial, held), reference, method="stgnet", genes=held, seed=0, device="cpu", **tiny)
    prov = out.uns["spatialimpute"]
    assert prov["config"]["preset"] == "fast"
    assert prov["config"]["schedule"]["s2_mask_fraction"] == 0.2  # resolved from "the share of missing genes"
    assert prov["config"]["schedule"]["sr_mode"] == "exact"
    assert prov["stgnet"]["refined"] is False and prov["stgnet"]["labels"]["n_labels"] == 1
    assert np.isfinite(out.X).all() and out.shape == (spatial.n_obs, len(held))


@pytest.mark.slow
def test_determinism_cache_and_save_load(sim, tmp_path):
    spatial, reference, _ = sim
    held = list(spatial.var_names[:5])
    clear_reference_cache()
    m1 = STGNET(spatial, reference, genes=held, seed=1, **TINY)
    out1 = m1.impute()
    assert m1.provenance()["stgnet"]["reference_stages_from_cache"] is False
    assert set(m1.history) >= {"s2_imputer", "s2_panel_imputer", "s3_student", "s5_total", "s5_kl"}
    # the fast preset trains no critic, and its masked-gene stage 2 needs no stage-1 generator
    assert not {"s1_generator", "s1_critic", "s2_critic", "s3_critic"} & set(m1.history)
    m2 = STGNET(spatial, reference, genes=held, seed=1, **TINY)
    out2 = m2.impute()
    assert m2.provenance()["stgnet"]["reference_stages_from_cache"] is True
    np.testing.assert_array_equal(out1.X, out2.X)
    # without the cache, the same seed gives the same numbers too
    clear_reference_cache()
    out3 = STGNET(spatial, reference, genes=held, seed=1, **TINY).impute()
    np.testing.assert_allclose(out1.X, out3.X, rtol=1e-5, atol=1e-6)
    # another fold (other held-out genes) reuses stages 1-2; another configuration does not
    m4 = STGNET(spatial, reference, genes=list(spatial.var_names[5:9]), seed=1, **TINY).train()
    assert m4.provenance()["stgnet"]["reference_stages_from_cache"] is True
    m5 = STGNET(spatial, reference, genes=held, seed=1, **{**TINY, "s2_lr": 5e-4}).train()
    assert m5.provenance()["stgnet"]["reference_stages_from_cache"] is False
    # save / load reproduces the prediction without retraining
    m1.save(tmp_path / "model")
    loaded = STGNET.load(tmp_path / "model", spatial, reference, device="cpu")
    np.testing.assert_allclose(loaded.impute().X, out1.X, rtol=1e-5, atol=1e-6)
    assert loaded.history["s5_total"] == m1.history["s5_total"]
    assert loaded.config() == m1.config()


def test_reference_stages_from_another_fold_equal_a_fresh_training():
    """Stages 1-2 reused from the model of another fold (other held-out genes) give the
    numbers this fold's model gets when it trains them itself: nothing the stages read
    depends on which genes are held out (the panel's gene order included)."""
    # 520 genes: the targets' principal components come from a randomized solver, which sees the column order
    spatial, reference, _ = simulate_pair(n_spatial=200, n_reference=600, n_genes=540, n_panel=520, seed=0)
    tiny = {**TINY, "refine": False}
    first, second = list(spatial.var_names[:6]), list(spatial.var_names[12:18])
    clear_reference_cache()
    STGNET(_panel_without(spatial, first), reference, genes=first, seed=0, **tiny).train()
    reused = STGNET(_panel_without(spatial, second), reference, genes=second, seed=0, **tiny)
    out_reused = reused.impute()
    assert reused.provenance()["stgnet"]["reference_stages_from_cache"] is True
    clear_reference_cache()
    fresh = STGNET(_panel_without(spatial, second), reference, genes=second, seed=0, **tiny)
    out_fresh = fresh.impute()
    assert fresh.provenance()["stgnet"]["reference_stages_from_cache"] is False
    np.testing.assert_allclose(out_reused.X, out_fresh.X, rtol=1e-5, atol=1e-6)


def test_saved_model_keeps_its_configuration_when_defaults_change(sim, tmp_path, monkeypatch):
    """A saved model reloads with the values it was trained with, whatever the library's
    defaults and presets are when it is loaded: same numbers."""
    spatial, reference, _ = sim
    held = list(spatial.var_names[:4])
    sp = _panel_without(spatial, held)
    model = STGNET(sp, reference, genes=held, seed=0, **{**TINY, "refine": False})
    out = model.impute()
    model.save(tmp_path / "m")
    defaults = list(STGNETArchitecture.__init__.__defaults__)  # a dataclass default ...
    defaults[STGNETArchitecture.names().index("s4_teacher_weight")] = 0.9
    monkeypatch.setattr(STGNETArchitecture.__init__, "__defaults__", tuple(defaults))
    monkeypatch.setitem(PRESETS, "fast", {"unet_map": 8, "s3_steps": 3, "spatial_alignment": "none"})  # ... a preset
    changed = STGNET(sp, reference, genes=held, device="cpu")
    assert changed.architecture.unet_map == 8 and changed.architecture.s4_teacher_weight == 0.9  # both are live
    loaded = STGNET.load(tmp_path / "m", sp, reference, device="cpu")
    assert loaded.config() == model.config()
    np.testing.assert_allclose(loaded.impute().X, out.X, rtol=1e-5, atol=1e-6)


def test_step_budget_and_reference_sample(sim):
    """The GAN stages run a fixed number of mini-batches whatever the number of cells, and
    stages 1-2 train on at most ``reference_cells`` reference cells."""
    spatial, reference, _ = sim
    held = list(spatial.var_names[:4])
    sp = _panel_without(spatial, held)
    kw = {**TINY, "refine": False, "s2_panel_steps": 0, "batch_size": 20, "n_teachers": 1}
    small = STGNET(sp, reference, genes=held, **{**kw, "reference_cells": 100}).train()
    large = STGNET(sp, reference, genes=held, **kw).train()
    assert small.provenance()["stgnet"]["reference_cells"] == 100
    assert large.provenance()["stgnet"]["reference_cells"] == reference.n_obs
    # history: one mean per pass over the cells trained on (5 and 20 batches per pass)
    assert len(small.history["s2_imputer"]) == 4 and len(large.history["s2_imputer"]) == 1
    # the original's epochs instead: passes over the cells
    by_epochs = STGNET(sp, reference, genes=held, **{**kw, "s2_steps": None, "s2_epochs": 2}).train()
    assert len(by_epochs.history["s2_imputer"]) == 2


def test_teachers_adapted_to_the_panel(sim):
    """``s2_panel_steps``: after stage 2 each teacher is fine-tuned with the panel as its
    mask; stage 2 itself is unchanged, and the fine-tuning lowers its loss."""
    spatial, reference, _ = sim
    held = list(spatial.var_names[:6])
    sp = _panel_without(spatial, held)
    kw = {**TINY, "refine": False, "batch_size": 25}
    base = STGNET(sp, reference, genes=held, seed=2, **{**kw, "s2_panel_steps": 0}).train()
    adapted = STGNET(sp, reference, genes=held, seed=2, **{**kw, "s2_panel_steps": 96}).train()
    assert "s2_panel_imputer" not in base.history
    assert base.history["s2_imputer"] == adapted.history["s2_imputer"]
    losses = adapted.history["s2_panel_imputer"]
    assert len(losses) == 6 and losses[-1] < losses[0]


@pytest.mark.slow
def test_reliability_describes_targets_through_the_teacher(sim):
    """Reliability comes from the teacher as stage 2 left it: another student (other
    stage-3 schedule) changes the prediction, not the scores."""
    spatial, reference, _ = sim
    held = list(spatial.var_names[:6])
    sp = _panel_without(spatial, held)
    kw = {**TINY, "refine": False, "reliability": True}
    a = STGNET(sp, reference, genes=held, seed=4, **kw).impute()
    b = STGNET(sp, reference, genes=held, seed=4, **{**kw, "s3_steps": 5, "s3_lr": 1e-2}).impute()
    assert not np.allclose(a.X, b.X)
    np.testing.assert_allclose(a.var["reliability"], b.var["reliability"], rtol=1e-5)


@pytest.mark.slow
def test_stage4_blends_student_and_teacher(sim):
    """Stage 4 is ``(1 - w)`` student + ``w`` teacher (the fast preset's w = 0.5)."""
    spatial, reference, _ = sim
    held = list(spatial.var_names[:6])
    sp = _panel_without(spatial, held)
    outs = {w: STGNET(sp, reference, genes=held, seed=2, **{**TINY, "refine": False, "s4_teacher_weight": w}).impute().X
            for w in (0.0, 0.5, 1.0)}
    assert not np.allclose(outs[0.0], outs[1.0])
    np.testing.assert_allclose(outs[0.5], (outs[0.0] + outs[1.0]) / 2, rtol=1e-4, atol=1e-5)


def test_panel_extension_and_given_labels(sim):
    spatial, reference, _ = sim
    sp = spatial.copy()
    ref = reference.copy()
    # spatial cells carry only a subset of the reference labels: codes must stay shared
    sp.obs["ct"] = ref.obs["cell_type"].iloc[: sp.n_obs].to_numpy()
    sp.obs.loc[sp.obs["ct"] == ref.obs["cell_type"].iloc[0], "ct"] = ref.obs["cell_type"].iloc[1]
    m = STGNET(sp, ref, seed=0, labels_key="ct", reference_labels_key="cell_type", **{**TINY, "s5_epochs": 3})
    out = m.impute()
    extension = [g for g in ref.var_names if g not in set(spatial.var_names)]
    assert sorted(out.var_names) == sorted(extension) and not out.var["in_panel"].any()
    assert np.isfinite(out.X).all()
    labels = m.provenance()["stgnet"]["labels"]
    assert labels == {"reference": "given", "spatial": "given", "n_labels": ref.obs["cell_type"].nunique()}


def test_leiden_labels_transferred_on_panel_genes(sim):
    spatial, reference, _ = sim
    held = list(spatial.var_names[:4])
    m = STGNET(_panel_without(spatial, held), reference, genes=held, seed=1, unlabelled="leiden",
               **{**TINY, "refine": False}).train()
    labels = m.provenance()["stgnet"]["labels"]
    assert labels["reference"] == "leiden" and labels["spatial"].startswith("transferred (knn")
    assert labels["n_labels"] > 1


def test_scale_roundtrip():
    rng = np.random.default_rng(0)
    counts = rng.poisson(3.0, size=(20, 6)).astype(float)
    lib = counts.sum(1) + 5
    scaled, cell_max = stgnet_scale(counts, lib)
    assert scaled.max() <= 1 + 1e-6 and np.allclose(scaled.max(1), 1.0)
    back = stgnet_unscale(scaled, cell_max, float(np.median(lib)))
    np.testing.assert_allclose(back, np.log1p(counts / lib[:, None] * np.median(lib)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bad", [
    {"preset": "huge"}, {"inference_noise": "gaussian"}, {"bn_inference": "eval"}, {"s1_steps": -1},
    {"batch_size": 0}, {"sr_mode": "dense"}, {"spatial_degree": 0}, {"refine": "auto"}, {"network_input": "raw"},
    {"s3_init": "zeros"}, {"s2_mask_fraction": 1.0}, {"s2_mask_fraction": "auto"}, {"n_teachers": 0},
    {"n_teachers": 1.5}, {"s2_target_neighbors": 0}, {"s2_panel_steps": -1}, {"s2_panel_steps": 2.5},
    {"s3_ema_decay": 1.0}, {"s3_ema_decay": True}, {"s4_teacher_weight": 1.5}, {"s4_teacher_weight": "half"},
    {"reliability": "teacher"}, {"s2_epochs": 3}, {"s3_steps": None}, {"s5_hidden": [8]}, {"reference_cells": 1},
    {"s2_panel_mask_fraction": 0.2}, {"output_scale": "cell_max"}, {"min_steps": 10},
])
def test_bad_options(sim, bad):
    spatial, reference, _ = sim
    with pytest.raises(SpatialImputeInputError):
        STGNET(spatial, reference, genes=list(spatial.var_names[:3]), **{**TINY, **bad})


def test_bad_inputs(sim):
    spatial, reference, _ = sim
    with pytest.raises(SpatialImputeInputError):
        STGNET(spatial, reference, not_a_param=1)
    with pytest.raises(SpatialImputeInputError, match="spatial"):
        STGNET(spatial[:2].copy(), reference, genes=list(spatial.var_names[:3]), **TINY).train()


#: The original method (docs/algorithms/stgnet.md), option by option.
PAPER_SPECIFICATION = {
    # networks: G1 trunk 512-256-128-64-32 with BatchNorm eps 0.8, 128-dim noise; critics on a
    # 64x64 map; U-Nets on a 128x128 map, 5 levels, 64 base channels, a 32-channel stem;
    # the mask only blends noise into the input; one stage-2 imputer
    "g1_channels": [512, 256, 128, 64, 32], "g1_bn_eps_quirk": True, "latent_dim": 128, "critic_map": 64,
    "unet_map": 128, "unet_levels": 5, "unet_ngf": 64, "unet_stem": 32, "unet_mask_input": False, "n_teachers": 1,
    # inputs: CP10k + log1p over each cell's maximum, no alignment of the spatial genes
    "input_scale": "cell_max", "network_input": "scaled", "spatial_alignment": "none",
    # labels: Leiden at resolution 0.5, spatial cells take the label of the single most
    # correlated reference cell (raw log-normalised values)
    "unlabelled": "leiden", "leiden_resolution": 0.5, "label_transfer": "pearson",
    "label_transfer_standardize": False,
    # stage 4: the student alone, N(0, 1) noise, BatchNorm on batch statistics; stage 5 always
    "s4_teacher_weight": 0.0, "inference_noise": "normal", "bn_inference": "batch_stats", "refine": True,
    # stage 5: radius graph of mean degree ~4, 5-NN feature graph, GCN 128/64, 101 epochs,
    # Adam 0.01, weight decay 1e-4, loss 1 ZINB + 1 SR + 10 KL
    "spatial_degree": 4.0, "feature_k": 5, "s5_hidden": [128, 64], "s5_epochs": 101, "s5_lr": 0.01,
    "s5_weight_decay": 1e-4, "zinb_weight": 1.0, "sr_weight": 1.0, "kl_weight": 10.0,
    # GAN schedule: 500 epochs of batches of 100 over all reference (and spatial) cells, critics with
    # gradient penalty 10 and adversarial weight 0.1, a generator update every 5 batches,
    # Adam 1e-4 (stage 1) and 1e-5 (stages 2-3)
    "s1_epochs": 500, "s2_epochs": 500, "s3_epochs": 500, "s1_steps": None, "s2_steps": None, "s3_steps": None,
    "batch_size": 100, "reference_cells": None, "spatial_cells": None, "image_budget": None, "adversarial": True, "gp_weight": 10.0, "adv_weight": 0.1,
    "n_critic": 5, "s3_update_every": 5, "s1_lr": 1e-4, "s2_lr": 1e-5, "s3_lr": 1e-5,
    # stage 2: masks x > 0 with class samples of G1 as targets; stage 3: a random student
    # regressed onto a fresh teacher pass at every update, its last iterate; no fine-tuning
    # of the teacher to the panel
    "s2_masks": "zeros", "s2_target_neighbors": 1, "s2_panel_steps": 0, "s3_targets": "teacher_sampled",
    "s3_init": "random", "s3_ema_decay": 0.0,
}


def test_paper_preset_is_the_specification(sim):
    spatial, reference, _ = sim
    m = STGNET(spatial, reference, genes=list(spatial.var_names[:3]), preset="paper", device="cpu")
    values = {**m.architecture.to_dict(), **m.schedule.to_dict()}
    assert {k: values[k] for k in PAPER_SPECIFICATION} == PAPER_SPECIFICATION
    # what the specification does not fix: the project's additions
    assert set(values) - set(PAPER_SPECIFICATION) == {
        "label_transfer_k", "reliability", "reliability_cells", "s2_mask_fraction", "sr_mode", "sr_exact_max_cells", "sr_negatives",
        "cache_reference_stages",
    }


@pytest.mark.slow
def test_paper_preset_runs_every_stage(sim):
    """The paper preset on a tiny geometry: critics in stages 1-3, Leiden labels, stage 5."""
    spatial, reference, _ = sim
    held = list(spatial.var_names[:3])
    small = dict(s1_epochs=1, s2_epochs=1, s3_epochs=1, s5_epochs=3, unet_map=16, unet_ngf=4, unet_levels=3,
                 unet_stem=8, g1_channels=[8, 4], critic_map=8, reliability=False, device="cpu")
    m = STGNET(_panel_without(spatial, held), reference, genes=held, seed=0, preset="paper", **small)
    out = m.impute()
    assert np.isfinite(out.X).all()
    assert {"s1_critic", "s2_critic", "s3_critic", "s5_total"} <= set(m.history)
    assert m.provenance()["stgnet"]["labels"]["spatial"] == "transferred (pearson, panel genes only)"


def test_network_inputs_standardized_panel_genes(sim):
    """The fast preset's networks read per-gene z-scores of each data set (held-out genes 0);
    the images they reconstruct stay on the [0, 1] scale."""
    from spatialimpute.model.stgnet.data import prepare, reference_sample

    spatial, reference, _ = sim
    held = list(spatial.var_names[:3])
    m = STGNET(_panel_without(spatial, held), reference, genes=held, device="cpu")
    d = prepare(m.paired, m.architecture, np.arange(m.paired.n_cells))
    reference_values, reference_inputs = reference_sample(m.paired, d, m.architecture, np.arange(m.paired.n_reference))
    rows = d.spatial_rows(m.paired, np.arange(m.paired.n_cells))
    assert rows.inputs.shape == (m.paired.n_cells, m.paired.n_features)
    np.testing.assert_allclose(rows.inputs.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(rows.inputs.std(0), 1, atol=1e-4)
    m._data = d
    images = m._panel_images(rows.inputs, d.feature_pos).reshape(m.paired.n_cells, -1).numpy()
    np.testing.assert_array_equal(images[:, d.feature_pos], rows.inputs)
    assert (images[:, d.target_pos] == 0).all() and (images[:, d.n_genes:] == 0).all()
    np.testing.assert_allclose(reference_inputs.std(0), 1, atol=1e-4)
    assert rows.values.min() >= 0 and rows.values.max() <= 1 and reference_values.max() <= 1
    assert d.genes == sorted(d.genes)  # a layout that does not depend on the fold


def test_stage2_targets_smoothed_over_reference_neighbours():
    """Stage 2's targets: each reference cell's mean over its k nearest reference cells,
    which removes most of a cell's sampling noise around its cell type and keeps the cell
    types apart."""
    from spatialimpute.model.stgnet.data import prepare, reference_sample, smoothed_targets

    spatial, reference, _ = simulate_pair(n_spatial=60, n_reference=400, n_genes=30, n_panel=24, n_cell_types=4,
                                          reference_depth=300, seed=5)
    m = STGNET(spatial, reference, genes=list(spatial.var_names[:3]), device="cpu")
    d = prepare(m.paired, m.architecture, np.arange(m.paired.n_cells))
    raw = reference_sample(m.paired, d, m.architecture, np.arange(m.paired.n_reference))[0]
    smoothed = smoothed_targets(m.paired.reference_X, raw, 15, 0, "cpu")
    types = reference.obs["cell_type"].astype(str).to_numpy()
    within = {"raw": [], "smoothed": [], "between": []}
    for label in np.unique(types):
        rows = types == label
        for name, values in (("raw", raw), ("smoothed", smoothed)):
            within[name].append(((values[rows] - raw[rows].mean(0)) ** 2).sum(1).mean())
        within["between"].append(((smoothed[rows].mean(0) - raw[rows].mean(0)) ** 2).sum())
    assert np.mean(within["smoothed"]) < 0.4 * np.mean(within["raw"]), within
    assert np.mean(within["between"]) < 0.1 * np.mean(within["raw"]), within


def test_match_quantiles_keeps_ranks_and_takes_reference_marginals():
    rng = np.random.default_rng(1)
    values = rng.exponential(3.0, size=(400, 3))
    values[:50, 0] = 0.0  # ties
    reference = rng.uniform(0.2, 0.6, size=(1000, 3))
    out = match_quantiles(values, reference)
    assert out.shape == values.shape and out.dtype == np.float32
    for j in range(3):
        order = np.argsort(values[:, j], kind="stable")
        assert (np.diff(out[order, j]) >= -1e-7).all()  # monotone per gene
        assert np.quantile(reference[:, j], 0.05) < np.median(out[:, j]) < np.quantile(reference[:, j], 0.95)
        assert 0.2 <= out[:, j].min() and out[:, j].max() <= 0.6
    assert np.unique(out[:50, 0]).size == 1  # tied values stay tied


def test_stage3_critic_sends_no_gradient_to_student():
    """The stage-3 adversarial term scores the teacher only: G3's gradient is the MSE's."""
    import torch

    from spatialimpute.module import stgnet as S
    from spatialimpute.nn.critics import ConvCritic
    from spatialimpute.nn.unet import UNetImputer

    torch.manual_seed(0)
    s, c, n = 3, 2, 20
    x = torch.rand(n, 1, s, s)
    gm = torch.ones(1, 1, s, s)
    gm[..., -1, :] = 0
    gm = gm.expand_as(x)
    onehot = torch.nn.functional.one_hot(torch.arange(n) % c, c).float()
    coords = torch.rand(n, 2)
    teacher = UNetImputer(s, c, 16, 4, 3)
    g3 = UNetImputer(s, c, 16, 4, 3, n_coords=2)
    d3 = ConvCritic(s, c, 8, n_coords=2)
    o = g3(x, gm, torch.rand_like(x), onehot, coords)
    with torch.no_grad():
        t = gm * x + (1 - gm) * teacher(x, gm, torch.rand_like(x), onehot)
    with_adv = S.generator_loss(t, o, d3(t, onehot, coords))
    without = S.generator_loss(t, o, None)
    assert with_adv.item() != pytest.approx(without.item())
    g_a = torch.autograd.grad(with_adv, list(g3.parameters()), retain_graph=True)
    g_b = torch.autograd.grad(without, list(g3.parameters()))
    for a, b in zip(g_a, g_b):
        torch.testing.assert_close(a, b)


def test_label_transfer_standardize_genes_removes_per_gene_shift():
    """A technology that scales/shifts each gene differently breaks per-cell correlation;
    z-scoring each gene within each data set first recovers the labels."""
    from spatialimpute.data.labels import transfer_labels

    rng = np.random.default_rng(2)
    centers = rng.normal(0, 1, size=(3, 8))
    ref_codes = np.repeat(np.arange(3), 60)
    ref = centers[ref_codes] + 0.3 * rng.normal(size=(180, 8))
    sp_codes = rng.integers(0, 3, size=120)
    sp = centers[sp_codes] + 0.3 * rng.normal(size=(120, 8))
    sp = sp * rng.uniform(0.2, 5.0, size=8) + rng.uniform(-10, 10, size=8)
    got = transfer_labels(sp, ref, ref_codes, method="knn", k=7, standardize_genes=True)
    assert (got == sp_codes).mean() > 0.85
    raw = transfer_labels(sp, ref, ref_codes, method="knn", k=7)
    assert (raw == sp_codes).mean() < (got == sp_codes).mean() - 0.2


def test_schedule_configs_are_frozen_and_checked_together():
    with pytest.raises(dataclasses.FrozenInstanceError):
        STGNETSchedule().s2_steps = 3
    assert STGNETSchedule(s2_steps=None, s2_epochs=2).length("s2", 250) == 4  # 2 passes of 2 batches of 100
    assert STGNETSchedule().length("s3", 10**6) == STGNETSchedule().s3_steps  # a budget: independent of cells


def test_fast_preset_predicts_in_blocks_and_trains_the_student_on_a_sample(sim):
    """Without stage 5 every cell is imputed on its own (its own noise, the alignment fitted
    once): blocks of cells give the whole prediction. Stage 3 trains on at most
    ``spatial_cells`` cells, and every cell is still imputed."""
    spatial, reference, _ = sim
    held = list(spatial.var_names[:3])
    model = STGNET(_panel_without(spatial, held), reference, genes=held, seed=0,
                   **{**TINY, "refine": False, "spatial_cells": 120}).train()
    whole = model.impute(block_size=10**6)
    blocked = model.impute(block_size=37, scheduler="synchronous")
    assert blocked.uns["spatialimpute"]["prediction"]["n_blocks"] == 9
    np.testing.assert_allclose(blocked.X, whole.X, rtol=1e-5, atol=1e-6)
    assert model.provenance()["stgnet"]["student_cells"] == 120
    assert whole.n_obs == spatial.n_obs and np.isfinite(whole.X).all()
    everyone = STGNET(_panel_without(spatial, held), reference, genes=held, seed=0, **{**TINY, "refine": False}).train()
    assert everyone.provenance()["stgnet"]["student_cells"] == spatial.n_obs
    assert np.abs(everyone.impute().X - whole.X).max() > 1e-4  # the sample is what the student saw


def test_quantile_map_ranks_new_values_among_the_fitted_ones():
    """Fitted values map by their average rank among themselves; other values by where they
    fall among them (monotone, within the reference's range)."""
    from scipy.stats import rankdata

    from spatialimpute.model.stgnet.data import QuantileMap

    rng = np.random.default_rng(0)
    fitted, reference = rng.gamma(1.0, size=(200, 3)), rng.normal(size=(500, 3))
    fitted[:20, 0] = 0.0  # ties
    qmap = QuantileMap.fit(fitted, reference)
    q = (rankdata(fitted, axis=0) - 0.5) / fitted.shape[0]  # average ranks of ties
    expected = np.stack([np.quantile(reference[:, j], q[:, j]) for j in range(3)], axis=1).astype(np.float32)
    np.testing.assert_allclose(qmap.apply(fitted), expected, rtol=1e-6, atol=1e-6)
    new = np.sort(rng.gamma(1.0, size=(50, 3)) * 2, axis=0)
    out = qmap.apply(new)
    assert (np.diff(out, axis=0) >= 0).all()
    low, high = reference.min(axis=0).astype(np.float32), reference.max(axis=0).astype(np.float32)
    assert (out >= low).all() and (out <= high).all() and (out[-1] == high).all()
