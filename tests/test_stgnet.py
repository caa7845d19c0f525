"""STGNET model: end to end on the simulator (planted answer), determinism, save/load,
reference-stage reuse, panel extension, labels, bad inputs."""

import numpy as np
import pytest
import torch

from spatialimpute._validation import SpatialImputeInputError
from spatialimpute.datasets import simulate_pair
from spatialimpute.model import stgnet as stgnet_mod
from spatialimpute.model.stgnet import STGNET, match_quantiles, stgnet_scale, stgnet_unscale

#: Tiny but complete schedule: every stage runs.
TINY = dict(s1_epochs=1, s2_epochs=1, s3_epochs=1, min_steps=20, s2_panel_steps=20, batch_size=50, s5_epochs=15,
            g1_channels=[8, 4], unet_ngf=4, s5_hidden=[32, 16], refine=True, reliability=False, device="cpu")


@pytest.fixture(scope="module")
def sim():
    return simulate_pair(n_spatial=300, n_reference=400, n_genes=30, n_panel=24, n_cell_types=4, n_domains=3,
                         spatial_depth=400, seed=3)


def _spcc(pred, truth):
    from scipy.stats import spearmanr

    return np.array([spearmanr(pred[:, j], truth[:, j])[0] for j in range(pred.shape[1])])


def test_planted_answer_recovery():
    """Held-out panel genes of a sparse simulated tissue are recovered (positive SPCC).

    Sparse counts matter: stage 2 only learns to fill entries that are zero in the
    reference, so a gene that never drops out in a class is never imputed for that class
    during training (a property of STGNET's design, see the benchmark notes).
    """
    spatial, reference, truth = simulate_pair(n_spatial=300, n_reference=400, n_genes=30, n_panel=24, n_cell_types=4,
                                              n_domains=3, spatial_depth=150, reference_depth=150, batch_shift=0.0,
                                              seed=3)
    held = list(spatial.var_names[::4])
    out = STGNET(spatial, reference, genes=held, seed=0, labels_key="cell_type", reference_labels_key="cell_type",
                 **{**TINY, "min_steps": 150, "g1_channels": [32, 16], "unet_ngf": 8, "s5_epochs": 40,
                    "reliability": True}).impute()
    assert out.shape == (spatial.n_obs, len(held))
    assert list(out.var_names) == held and out.var["in_panel"].all()
    assert np.isfinite(out.X).all() and (out.X >= 0).all()
    spcc = _spcc(out.X, truth[:, held].X)
    assert np.nanmean(spcc) > 0.08, spcc
    reliability = out.var["reliability"].to_numpy()
    assert np.isfinite(reliability).all() and ((reliability >= 0) & (reliability <= 1)).all()


def test_determinism_save_load_and_cache(sim, tmp_path):
    spatial, reference, _ = sim
    held = list(spatial.var_names[:5])
    stgnet_mod.clear_reference_cache()
    m1 = STGNET(spatial, reference, genes=held, seed=1, **TINY)
    out1 = m1.impute()
    assert m1.provenance()["stgnet"]["reference_stages_from_cache"] is False
    assert set(m1.history) >= {"s2_imputer", "s3_student", "s5_total", "s5_kl"}
    # the fast preset trains no critic, and its masked-gene stage 2 needs no stage-1 generator
    assert not {"s1_generator", "s1_critic", "s2_critic"} & set(m1.history)
    # the fast preset's teacher is a mean of three independently trained reference imputers
    members = m1.G2.members
    assert len(members) == 3 and len(m1.history["s2_imputer"]) == m1._epochs("s2", reference.n_obs)
    w0, w1 = (next(iter(m.state_dict().values())) for m in members[:2])
    assert not torch.equal(w0, w1)
    m2 = STGNET(spatial, reference, genes=held, seed=1, **TINY)
    out2 = m2.impute()
    assert m2.provenance()["stgnet"]["reference_stages_from_cache"] is True
    np.testing.assert_array_equal(out1.X, out2.X)
    # without the cache, the same seed gives the same numbers too
    stgnet_mod.clear_reference_cache()
    out3 = STGNET(spatial, reference, genes=held, seed=1, **TINY).impute()
    np.testing.assert_allclose(out1.X, out3.X, rtol=1e-5, atol=1e-6)
    assert m1.provenance()["stgnet"]["labels"]["n_labels"] == 1  # fast preset: one class without labels
    # the original's route: Leiden clusters of the reference, transferred on panel genes
    m_leiden = STGNET(spatial, reference, genes=held, seed=1, unlabelled="leiden", **{**TINY, "s5_epochs": 2})
    assert np.isfinite(m_leiden.impute().X).all()
    assert m_leiden.provenance()["stgnet"]["labels"]["reference"] == "leiden"
    assert m_leiden._sp_codes.shape == (spatial.n_obs,) and len(m_leiden._label_categories) > 1
    # another fold (other held-out genes) reuses stages 1-2
    m4 = STGNET(spatial, reference, genes=list(spatial.var_names[5:9]), seed=1, **TINY)
    m4.train()
    assert m4.provenance()["stgnet"]["reference_stages_from_cache"] is True
    # save / load reproduces the prediction without retraining
    m1.save(tmp_path / "model")
    loaded = STGNET.load(tmp_path / "model", spatial, reference, device="cpu")
    np.testing.assert_allclose(loaded.impute().X, out1.X, rtol=1e-5, atol=1e-6)
    assert loaded.history["s5_total"] == m1.history["s5_total"]


def test_auto_refinement_follows_heldout_panel_genes(sim, monkeypatch):
    """``refine="auto"`` keeps stage 5 exactly when it raised the held-out panel genes' SPCC:
    a stage 5 that returns the measured values is kept, one that returns noise is not."""
    spatial, reference, _ = sim
    held = list(spatial.var_names[:3])
    sp = spatial[:, [g for g in spatial.var_names if g not in held]].copy()
    n_panel = sp.n_vars
    calls = []

    def fake_stage5(self, features, observed_pos, tag, cells=None, model=None, train=True):
        calls.append(tag)
        if tag != "_refine_check":
            return None, features, {}, {}
        out = features.clone()
        values = torch.as_tensor(self._spatial[cells] if mode == "truth" else np.random.default_rng(0).random(out.shape),
                                 dtype=out.dtype)
        out[:, :] = values
        return None, out, {}, {}

    monkeypatch.setattr(STGNET, "_stage5", fake_stage5)
    for mode, kept in (("truth", True), ("noise", False)):
        calls.clear()
        m = STGNET(sp, reference, genes=held, seed=0, **{**TINY, "refine": "auto"})
        m.train()
        check = m.provenance()["stgnet"]["refine_check"]
        assert check["refine"] is kept and (check["spcc_refined"] > check["spcc_stage4"]) is kept
        assert calls == (["_refine_check", ""] if kept else ["_refine_check"])
        assert check["heldout_panel_genes"] == n_panel // 5


def test_fast_preset_stops_at_stage4(sim):
    """The fast preset's default ``refine=False``: no stage 5 is trained or checked, and the
    prediction is the stage-4 output."""
    spatial, reference, _ = sim
    held = list(spatial.var_names[:4])
    sp = spatial[:, [g for g in spatial.var_names if g not in held]].copy()
    tiny = {k: v for k, v in TINY.items() if k != "refine"}
    m = STGNET(sp, reference, genes=held, seed=0, **tiny)
    out = m.impute()
    assert m._cfg["refine"] is False and m.S5 is None and m._refine_check is None
    assert not any(k.startswith("s5_") for k in m.history)
    np.testing.assert_allclose(out.X, m._final_targets(m._s4, m._target_pos), rtol=1e-6)


def test_teachers_adapted_to_the_panel(sim, tmp_path):
    """``s2_panel_steps``: after the shared stages 1-2, each teacher is fine-tuned with the
    panel as its mask; its error on the reference's target genes given the panel falls,
    and the cached stage-2 weights other folds reuse are left as trained."""
    spatial, reference, _ = sim
    held = list(spatial.var_names[:6])
    sp = spatial[:, [g for g in spatial.var_names if g not in held]].copy()
    stgnet_mod.clear_reference_cache()
    kw = {**TINY, "s2_panel_steps": 0}
    base = STGNET(sp, reference, genes=held, seed=2, **kw)
    base.train()
    assert "s2_panel_imputer" not in base.history and base.G2_general is None
    adapted = STGNET(sp, reference, genes=held, seed=2, **{**kw, "s2_panel_steps": 60})
    adapted.train()
    assert adapted.provenance()["stgnet"]["reference_stages_from_cache"] is True
    assert len(adapted.history["s2_panel_imputer"]) == -(-60 // (reference.n_obs // TINY["batch_size"]))
    (cached,) = stgnet_mod._REFERENCE_CACHE.values()
    for name, value in base.G2.named_parameters():  # (stage 3 moves the BatchNorm statistics)
        torch.testing.assert_close(cached["g2"][name], value.detach())
    # the teachers before the fine-tuning are kept (reliability proxies) and saved
    for name, value in adapted.G2_general.state_dict().items():
        torch.testing.assert_close(cached["g2"][name], value)
    adapted.save(tmp_path / "adapted")
    loaded = STGNET.load(tmp_path / "adapted", sp, reference, device="cpu")
    for name, value in adapted.G2_general.state_dict().items():
        torch.testing.assert_close(loaded.G2_general.state_dict()[name], value)

    def target_error(model):
        ref = torch.as_tensor(model._ref_in)
        observed = np.zeros(model._n_genes, dtype=np.float32)
        observed[model._feature_pos] = 1
        side = model._side
        x = stgnet_mod.S.to_images(ref * torch.as_tensor(observed), side)
        gm = stgnet_mod.S.to_images(torch.as_tensor(observed[None]), side).expand_as(x)
        model.G2.eval()
        with torch.no_grad():
            out = stgnet_mod.S.from_images(model.G2(x, gm, torch.rand_like(x), model._onehot(model._ref_codes)), model._n_genes)
        smoothed = stgnet_mod.S.from_images(model._smoothed_reference_images(), model._n_genes)
        return float(((out - smoothed)[:, model._target_pos] ** 2).mean())

    assert target_error(adapted) < 0.9 * target_error(base)


def test_reliability_describes_targets_through_the_teacher(sim):
    """The reliability model is fitted on the teacher's held-out panel genes, so the target
    genes are described through the teacher too: the scores do not move with the student."""
    spatial, reference, _ = sim
    held = list(spatial.var_names[:6])
    sp = spatial[:, [g for g in spatial.var_names if g not in held]].copy()
    model = STGNET(sp, reference, genes=held, seed=4, **{**TINY, "refine": False, "reliability": True})
    model.train()
    cells = np.arange(model.paired.n_cells)
    images, inputs, gm, onehot, coords = model._spatial_tensors(model._feature_pos)
    teacher = model._stage4(model.G2_general, images, inputs, gm, onehot, coords, "_rel_targets")
    np.testing.assert_allclose(model._reliability_targets(cells), model._final_targets(teacher, model._target_pos))
    before = model.impute()
    with torch.no_grad():
        for value in model.G3.parameters():
            value.add_(torch.randn_like(value))
    model._mu = None
    after = model.impute()
    assert not np.allclose(after.X, before.X)
    np.testing.assert_array_equal(after.var["reliability"], before.var["reliability"])


def test_stage4_blends_student_and_teacher(sim):
    """Stage 4 is ``(1 - w)`` student + ``w`` teacher ensemble (the fast preset's w = 0.5);
    w = 0 is the student alone and w = 1 the teacher; measured genes pass through."""
    spatial, reference, _ = sim
    held = list(spatial.var_names[:6])
    sp = spatial[:, [g for g in spatial.var_names if g not in held]].copy()
    model = STGNET(sp, reference, genes=held, seed=2, **{**TINY, "refine": False})
    model.train()
    assert model._cfg["s4_teacher_weight"] == 0.5
    tensors = model._spatial_tensors(model._feature_pos)
    student = model._stage4(model.G3, *tensors, "")
    teacher = model._stage4(model.G2, *tensors, "_teacher")
    assert not torch.allclose(student, teacher)
    torch.testing.assert_close(model._s4, (student + teacher) / 2)
    for weight, expected in ((0.0, student), (1.0, teacher)):
        model._cfg["s4_teacher_weight"] = weight
        torch.testing.assert_close(model._stage4_output(model.G3, model.G2, *tensors, ""), expected)
    pos = model._feature_pos
    np.testing.assert_allclose(model._s4[:, pos].numpy(), model._spatial[:, pos], atol=1e-6)


@pytest.mark.parametrize("heldout", ["teacher_refined", "full"])
def test_reliability_heldout_variants(sim, heldout, monkeypatch):
    """``"full"`` retrains a student per internal fold and blends it with the teacher as
    stage 4 does; ``"teacher_refined"`` refines the teacher's output. Both give a finite
    score per target gene."""
    spatial, reference, _ = sim
    held = list(spatial.var_names[:4])
    sp = spatial[:, [g for g in spatial.var_names if g not in held]].copy()
    model = STGNET(sp, reference, genes=held, seed=1, **{**TINY, "reliability": True, "reliability_heldout": heldout})
    blended = []
    original = STGNET._stage4_output

    def spy(self, student, teacher, *args):
        blended.append((args[-1], teacher is self.G2_general))
        return original(self, student, teacher, *args)

    monkeypatch.setattr(STGNET, "_stage4_output", spy)
    out = model.impute()
    assert np.isfinite(out.var["reliability"].to_numpy()).all()
    internal = [teacher_is_general for tag, teacher_is_general in blended if tag.startswith("_rel")]
    assert (len(internal) > 0 and all(internal)) if heldout == "full" else not internal


def test_mask_fraction_auto_follows_the_share_of_missing_genes():
    """Stage 2 hides as many genes as the spatial data lacks: 0.2 in 5-fold CV, 0.8 when the
    panel is a fifth of the genes to impute."""
    spatial, reference, _ = simulate_pair(n_spatial=60, n_reference=80, n_genes=30, n_panel=6, seed=1)
    assert STGNET(spatial, reference, device="cpu")._config()["s2_mask_fraction"] == 0.8
    assert STGNET(spatial, reference, genes=list(spatial.var_names[:1]), device="cpu")._config()["s2_mask_fraction"] == 0.2
    assert STGNET(spatial, reference, device="cpu", s2_mask_fraction=0.3)._config()["s2_mask_fraction"] == 0.3


def test_panel_extension_and_given_labels(sim):
    spatial, reference, _ = sim
    sp = spatial.copy()
    ref = reference.copy()
    # spatial cells carry only a subset of the reference labels: codes must stay shared
    sp.obs["ct"] = ref.obs["cell_type"].iloc[: sp.n_obs].to_numpy()
    sp.obs.loc[sp.obs["ct"] == ref.obs["cell_type"].iloc[0], "ct"] = ref.obs["cell_type"].iloc[1]
    m = STGNET(sp, ref, seed=0, labels_key="ct", reference_labels_key="cell_type", **TINY)
    out = m.impute()
    extension = [g for g in ref.var_names if g not in set(spatial.var_names)]
    assert sorted(out.var_names) == sorted(extension) and not out.var["in_panel"].any()
    assert np.isfinite(out.X).all()
    cats = m._label_categories
    np.testing.assert_array_equal(np.asarray(cats)[m._sp_codes], sp.obs["ct"].astype(str).to_numpy())
    np.testing.assert_array_equal(np.asarray(cats)[m._ref_codes], ref.obs["cell_type"].astype(str).to_numpy())
    assert m.provenance()["stgnet"]["labels"]["spatial"] == "given"


def test_scale_roundtrip():
    rng = np.random.default_rng(0)
    counts = rng.poisson(3.0, size=(20, 6)).astype(float)
    lib = counts.sum(1) + 5
    scaled, cell_max = stgnet_scale(counts, lib)
    assert scaled.max() <= 1 + 1e-6 and np.allclose(scaled.max(1), 1.0)
    back = stgnet_unscale(scaled, cell_max, float(np.median(lib)))
    np.testing.assert_allclose(back, np.log1p(counts / lib[:, None] * np.median(lib)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bad", [
    {"preset": "huge"}, {"inference_noise": "gaussian"}, {"bn_inference": "eval"}, {"s1_epochs": -1},
    {"batch_size": 0}, {"sr_mode": "dense"}, {"output_scale": "raw"}, {"spatial_degree": 0},
    {"refine": "sometimes"}, {"network_input": "raw"}, {"s3_init": "zeros"}, {"s2_mask_fraction": 1.0},
    {"s2_mask_fraction": "half"}, {"n_teachers": 0}, {"n_teachers": 1.5},
    {"s2_target_neighbors": 0}, {"s2_panel_steps": -1}, {"s2_panel_steps": 2.5},
    {"s2_panel_mask_fraction": 1.0}, {"s2_panel_mask_fraction": "auto"}, {"s3_ema_decay": 1.0},
    {"s3_ema_decay": True}, {"s4_teacher_weight": 1.5}, {"s4_teacher_weight": "half"},
])
def test_bad_params(sim, bad):
    spatial, reference, _ = sim
    with pytest.raises(SpatialImputeInputError):
        STGNET(spatial, reference, genes=list(spatial.var_names[:3]), **{**TINY, **bad}).train()


def test_bad_inputs(sim):
    spatial, reference, _ = sim
    with pytest.raises(SpatialImputeInputError):
        STGNET(spatial, reference, not_a_param=1)
    with pytest.raises(SpatialImputeInputError, match="spatial"):
        STGNET(spatial[:2].copy(), reference, genes=list(spatial.var_names[:3]), **TINY).train()


def test_paper_preset_resolves_original_schedule(sim):
    spatial, reference, _ = sim
    m = STGNET(spatial, reference, genes=list(spatial.var_names[:3]), preset="paper", device="cpu")
    cfg = m._config()
    assert cfg["unet_map"] == 128 and cfg["unet_levels"] == 5 and cfg["s1_epochs"] == 500
    assert cfg["n_critic"] == 5 and cfg["s3_critic"] is True and cfg["s1_lr"] == 1e-4 and cfg["s3_lr"] == 1e-5
    assert cfg["s2_masks"] == "zeros" and cfg["input_scale"] == "cell_max" and cfg["unlabelled"] == "leiden"
    assert cfg["network_input"] == "scaled" and cfg["unet_mask_input"] is False
    assert cfg["n_teachers"] == 1 and cfg["s2_target_neighbors"] == 1 and cfg["refine"] is True
    assert cfg["s2_panel_steps"] == 0 and cfg["s3_ema_decay"] == 0.0 and cfg["s4_teacher_weight"] == 0.0


def test_network_input_standardized_panel_genes(sim):
    """The fast preset's networks read per-gene z-scores of each data set (held-out genes 0);
    the images they reconstruct stay on the [0, 1] scale."""
    spatial, reference, _ = sim
    held = list(spatial.var_names[:3])
    m = STGNET(spatial[:, [g for g in spatial.var_names if g not in held]].copy(), reference, genes=held, device="cpu")
    m._cfg = m._config()
    assert m._cfg["network_input"] == "standardized" and m._cfg["unet_mask_input"] is True
    m._prepare(labels=False)
    sp_in = m._spatial_in[:, m._feature_pos]
    np.testing.assert_allclose(sp_in.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(sp_in.std(0), 1, atol=1e-4)
    assert (m._spatial_in[:, m._target_pos] == 0).all()
    np.testing.assert_allclose(m._ref_in.std(0), 1, atol=1e-4)
    assert m._spatial.min() >= 0 and m._spatial.max() <= 1 and m._ref.max() <= 1


def test_stage2_targets_smoothed_over_reference_neighbours():
    """``s2_target_neighbors=k``: stage 2 regresses onto each reference cell's mean over its
    k nearest reference cells, which removes most of a cell's sampling noise around its
    cell type and keeps the cell types apart; k=1 regresses onto the cell itself."""
    spatial, reference, _ = simulate_pair(n_spatial=60, n_reference=400, n_genes=30, n_panel=24, n_cell_types=4,
                                          reference_depth=300, seed=5)
    m = STGNET(spatial, reference, genes=list(spatial.var_names[:3]), device="cpu")
    m._cfg = m._config()
    assert m._cfg["s2_target_neighbors"] == 15
    m._prepare(labels=False)
    smoothed = stgnet_mod.S.from_images(m._smoothed_reference_images(), m._n_genes).numpy()
    raw = m._ref
    types = reference.obs["cell_type"].astype(str).to_numpy()
    within = {"raw": [], "smoothed": [], "between": []}
    for label in np.unique(types):
        rows = types == label
        for name, values in (("raw", raw), ("smoothed", smoothed)):
            within[name].append(((values[rows] - raw[rows].mean(0)) ** 2).sum(1).mean())
        within["between"].append(((smoothed[rows].mean(0) - raw[rows].mean(0)) ** 2).sum())
    assert np.mean(within["smoothed"]) < 0.4 * np.mean(within["raw"]), within
    assert np.mean(within["between"]) < 0.1 * np.mean(within["raw"]), within
    m._cfg["s2_target_neighbors"] = 1
    assert m._smoothed_reference_images() is None


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
