"""StImpute model: planted-answer recovery, options, save/load, determinism, bad input."""

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import spearmanr

from spatialimpute._validation import SpatialImputeInputError
from spatialimpute.datasets import simulate_pair
from spatialimpute.model.stimpute import StImpute
from spatialimpute.nn.gene_sage import GeneMixing
from spatialimpute.module.stimpute import (
    StImputeGNN,
    final_blend,
    gnn_forward_chunked,
    gnn_loss_and_backward,
    stimpute_loss,
    weighted_knn_mean,
)

FAST = {"ae_epochs": 10, "gnn_steps": 8, "k": 15, "reliability_steps": 30}


@pytest.fixture(scope="module")
def sim():
    return simulate_pair(n_spatial=300, n_reference=400, n_genes=50, n_panel=30, n_cell_types=4,
                         n_domains=3, spatial_depth=300, seed=3)


def _pcc(truth, out):
    """Per-gene Pearson against the planted, noise-free expression."""
    t = truth[:, out.var_names].layers["expected"]
    return np.array([np.corrcoef(t[:, j], out.X[:, j])[0, 1] for j in range(out.n_vars)])


def _cosine_knn_baseline(spatial, reference, genes, k=15):
    """Plain cosine kNN on the log-normalised panel: the issue's baseline."""
    from spatialimpute.data.neighbors import knn_cosine
    from spatialimpute.model.knn import KNNImpute

    m = KNNImpute(spatial, reference, device="cpu")
    p = m.paired
    idx, _ = knn_cosine(p.spatial_X, p.reference_features, k, device="cpu")
    return p.reference_targets[idx.numpy()].mean(axis=1)


def test_planted_answer_recovery_panel_extension(sim):
    spatial, reference, truth = sim
    model = StImpute(spatial, reference, seed=0, device="cpu", **FAST)
    out = model.impute()
    targets = [g for g in reference.var_names if g not in set(spatial.var_names)]
    assert list(out.var_names) == targets and not out.var["in_panel"].any()
    assert out.X.dtype == np.float32 and np.isfinite(out.X).all()
    pcc = _pcc(truth, out)
    t = truth[:, targets].layers["expected"]
    for k in (15, 50):
        base = _cosine_knn_baseline(spatial, reference, targets, k=k)
        base_pcc = np.array([np.corrcoef(t[:, j], base[:, j])[0, 1] for j in range(len(targets))])
        assert np.nanmean(pcc) > np.nanmean(base_pcc)
    assert np.nanmean(pcc) > 0.45
    rel = out.var["reliability"].to_numpy()
    assert ((rel >= 0) & (rel <= 1)).all()
    assert out.uns["spatialimpute"]["method"] == "stimpute"
    assert model.history["gnn_loss"][-1] < model.history["gnn_loss"][0]
    assert "ae_loss" not in model.history  # the joint space needs no autoencoder


def test_reliability_ranks_genes_by_accuracy(sim):
    spatial, reference, truth = sim
    out = StImpute(spatial, reference, seed=0, device="cpu", **FAST).impute()
    pcc = _pcc(truth, out)
    rho = spearmanr(out.var["reliability"], pcc).correlation
    assert rho > 0.3


def test_original_autoencoder_space_and_reliability_mlp(sim):
    spatial, reference, truth = sim
    model = StImpute(spatial, reference, seed=0, device="cpu", preset="paper", **FAST)
    out = model.impute()
    assert np.nanmean(_pcc(truth, out)) > 0.45
    assert {"gnn_loss", "ae_loss", "ae_refine_loss", "reliability_loss"} <= set(model.history)
    rel = out.var["reliability"].to_numpy()
    assert ((rel >= 0) & (rel <= 1)).all()


@pytest.mark.parametrize("kw", [{"graph_mode": "similarity_paper"}, {"graph_mixing": "dense"}])
def test_graph_options_recover_signal(sim, kw):
    spatial, reference, truth = sim
    out = StImpute(spatial, reference, seed=0, device="cpu", **kw, **FAST).impute()
    assert np.nanmean(_pcc(truth, out)) > 0.45


def test_validation_genes_and_embedding_table(sim, tmp_path):
    spatial, reference, truth = sim
    genes = list(spatial.var_names[:5])
    rng = np.random.default_rng(0)
    covered = list(reference.var_names[::2])
    table = pd.DataFrame(rng.normal(size=(len(covered), 8)), index=[g.lower() for g in covered])
    path = tmp_path / "emb.tsv.gz"
    table.to_csv(path, sep="\t")
    model = StImpute(spatial, reference, genes=genes, seed=0, device="cpu", gene_embeddings=str(path), **FAST)
    out = model.impute()
    assert out.var["in_panel"].all()
    cov = out.uns["spatialimpute"]["embedding_coverage"]
    assert cov["n_covered"] == len([g for g in model.paired.feature_genes + genes if g in covered])
    assert 0 < cov["n_covered"] < cov["n_genes"]  # the rest used the expression fallback
    assert np.nanmean(_pcc(truth, out)) > 0.45


def test_embedding_table_covering_no_gene_is_rejected(sim):
    spatial, reference, _ = sim
    table = pd.DataFrame(np.ones((2, 4)), index=["NotAGene1", "NotAGene2"])
    with pytest.raises(SpatialImputeInputError, match="gene_embeddings"):
        StImpute(spatial, reference, device="cpu", gene_embeddings=table, **FAST).train()


def test_tiny_esm2_source_end_to_end(sim, tmp_path):
    pytest.importorskip("esm")
    from esm.model.esm2 import ESM2

    spatial, reference, truth = sim
    torch.manual_seed(0)
    net = ESM2(num_layers=1, embed_dim=16, attention_heads=2, alphabet="ESM-1b")
    state = {k: v for k, v in net.state_dict().items() if not k.startswith("contact_head.regression")}
    ckpt = tmp_path / "tiny.pt"
    torch.save({"model": state, "cfg": {"model": {"encoder_layers": 1, "encoder_embed_dim": 16,
                                                   "encoder_attention_heads": 2}}}, ckpt)
    g = list(spatial.var_names[:3])
    fasta = tmp_path / "p.fa"
    fasta.write_text(f">{g[0]}\nMQIFVKTLTGKTITLEVEPSDTIENVKAKIQDKEGIPPDQQRLIFAG\n"
                     f">{g[1]}\nMALWMRLLPLLALLALWGPDPAAAFVNQHLCGSHLVEALYLVCGERG\n"
                     f">{g[2]}\nMSGRGKGGKGLGKGGAKRHRKVLRDNIQGITKPAIRRLARRGGVKRI\n")
    model = StImpute(spatial, reference, seed=0, device="cpu", esm_fasta=str(fasta), esm_checkpoint=str(ckpt),
                     esm_pooling="mean", esm_cache_dir=str(tmp_path / "cache"), **FAST)
    out = model.impute()
    assert out.uns["spatialimpute"]["embedding_coverage"]["n_covered"] == 3
    assert np.isfinite(out.X).all()


@pytest.mark.parametrize("kw", [{}, {"preset": "paper"}])
def test_save_load_round_trip_and_determinism(sim, tmp_path, kw):
    spatial, reference, _ = sim
    a = StImpute(spatial, reference, seed=5, device="cpu", **kw, **FAST)
    out_a = a.impute()
    b = StImpute(spatial, reference, seed=5, device="cpu", **kw, **FAST).impute()
    np.testing.assert_array_equal(out_a.X, b.X)
    np.testing.assert_array_equal(out_a.var["reliability"], b.var["reliability"])
    c = StImpute(spatial, reference, seed=6, device="cpu", **kw, **FAST).impute()
    assert not np.array_equal(out_a.X, c.X)
    a.save(tmp_path / "model")
    loaded = StImpute.load(tmp_path / "model", spatial, reference, device="cpu")
    out_l = loaded.impute()
    np.testing.assert_allclose(out_l.X, out_a.X, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out_l.var["reliability"], out_a.var["reliability"], atol=1e-6)
    with pytest.raises(SpatialImputeInputError):
        StImpute.load(tmp_path / "model", spatial[:50].copy(), reference, device="cpu")


def test_minibatch_and_chunked_paths_run(sim):
    spatial, reference, truth = sim
    model = StImpute(spatial, reference, seed=0, device="cpu", step_work=128 * 30 * 15, memory_budget_gb=1e-4, **FAST)
    out = model.impute()
    fit = out.uns["spatialimpute"]["fit"]
    assert fit["batch_cells"] == 128 and fit["train_chunk_cells"] < 128  # batches, each in several chunks
    assert np.nanmean(_pcc(truth, out)) > 0.4


def test_saved_model_keeps_its_resolved_configuration(sim, tmp_path, monkeypatch):
    """Save, change a default, load: the loaded model predicts with the values it was trained with."""
    spatial, reference, _ = sim
    model = StImpute(spatial, reference, seed=1, device="cpu", **FAST)
    out = model.impute()
    saved = out.uns["spatialimpute"]["config"]
    assert saved["architecture"]["regime"] == "small" and saved["architecture"]["k"] == 15
    model.save(tmp_path / "m")
    monkeypatch.setattr(StImpute, "presets", {**StImpute.presets, "fast": {"alpha": 0.9}})  # a new default
    assert StImpute(spatial, reference, device="cpu").architecture.alpha == 0.9
    loaded = StImpute.load(tmp_path / "m", spatial, reference, device="cpu")
    assert loaded.architecture.alpha == 0.5
    np.testing.assert_allclose(loaded.impute().X, out.X, rtol=1e-5, atol=1e-5)


def test_paper_preset_is_the_original():
    """Every value the original code uses under preset="paper" (docs/algorithms/stimpute.md)."""
    paper = StImpute.presets["paper"]
    arch = StImpute.Architecture.from_options(paper, {})
    sched = StImpute.Schedule.from_options(paper, {})
    assert (arch.graph_mode, arch.graph_mixing, arch.neighbor_space, arch.reliability_model) == (
        "distance_code", "dense", "autoencoder", "mlp")
    assert (arch.k, arch.hidden, arch.alpha, arch.regime) == (None, None, None, "auto")  # the size regimes
    assert arch.latent_dim == 100 and arch.esm_pooling == "last"
    assert (sched.em_rounds, sched.ae_epochs, sched.ae_steps, sched.ae_batch_size) == (2, 30, 10, 512)
    assert (sched.lr, sched.weight_decay, sched.ae_lr, sched.ae_weight_decay) == (1e-2, 1e-2, 1e-2, 1e-4)
    assert sched.step_work is None and sched.gnn_steps is None and sched.reliability_steps is None  # regimes, full batch


def test_low_rank_mixing_matches_dense():
    from spatialimpute.data.gene_graph import aggregation_matrix

    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(120, 6)) + 3.0  # similar genes, as protein embeddings are
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    agg = torch.as_tensor(aggregation_matrix(vecs @ vecs.T, "distance_code"))
    low, dense = GeneMixing.low_rank(agg), GeneMixing.dense(agg)
    assert low.rank is not None and low.rank <= 8
    h = torch.rand(4, 5, 120)
    torch.testing.assert_close(low(h), dense(h), rtol=1e-3, atol=1e-4)
    out = torch.tensor([3, 50, 119])
    torch.testing.assert_close(low(h, out), dense(h)[..., out], rtol=1e-3, atol=1e-4)
    restored = GeneMixing.from_state(low.state())
    torch.testing.assert_close(restored(h), low(h))
    # the kept projection of a matrix's rows, gathered per cell, expands to the rows' mixing
    reference = torch.rand(30, 120)
    idx = torch.randint(0, 30, (4, 5))
    for mixing in (low, dense):
        projection = mixing.project(reference)
        assert projection.shape[1] == (low.rank if mixing is low else 120)
        torch.testing.assert_close(mixing.expand(projection[idx], reference[idx]), mixing(reference[idx]))
        torch.testing.assert_close(mixing.expand(projection[idx], reference[idx], out),
                                   mixing(reference[idx], out))
        gnn = StImputeGNN(5, 8).eval()
        with torch.no_grad():
            torch.testing.assert_close(gnn_forward_chunked(gnn, reference, idx, mixing, 3, out),
                                       gnn(reference[idx], mixing, None, out))


def test_bad_parameters_are_named(sim):
    spatial, reference, _ = sim
    for kw, name in [({"graph_mode": "cosine"}, "graph_mode"), ({"regime": "huge"}, "regime"),
                     ({"preset": "slow"}, "preset"), ({"k": 0}, "k"), ({"alpha": 2.0}, "alpha"),
                     ({"step_work": -1}, "step_work"), ({"neighbor_space": "umap"}, "neighbor_space"),
                     ({"reliability": "mlp"}, "reliability"), ({"graph_mixing": "sparse"}, "graph_mixing")]:
        with pytest.raises(SpatialImputeInputError, match=name):
            StImpute(spatial, reference, device="cpu", **{**FAST, **kw}).train()
    with pytest.raises(SpatialImputeInputError, match="params"):
        StImpute(spatial, reference, device="cpu", not_a_param=1)


# ------------------------------------------------------------------ module-level maths
def test_chunked_gradients_equal_full_batch():
    torch.manual_seed(0)
    ref = torch.rand(60, 7)
    idx = torch.randint(0, 60, (33, 5))
    y = torch.rand(33, 7)
    mixing = GeneMixing.dense(torch.rand(7, 7))
    gnn = StImputeGNN(5, 8)
    gnn_loss_and_backward(gnn, ref, idx, y, mixing, chunk_size=1000)
    full = [p.grad.clone() for p in gnn.parameters()]
    gnn.zero_grad()
    loss = gnn_loss_and_backward(gnn, ref, idx, y, mixing, chunk_size=4)
    for g_full, p in zip(full, gnn.parameters()):
        torch.testing.assert_close(p.grad, g_full, rtol=1e-4, atol=1e-6)
    assert loss == pytest.approx(float(stimpute_loss(gnn(ref[idx], mixing), y).detach()), rel=1e-5)


def test_weighted_knn_mean_formula_and_guards():
    ref = torch.tensor([[1.0, 0.0], [3.0, 0.0], [5.0, 0.0]])
    idx = torch.tensor([[0, 1, 2], [0, 1, 2], [0, 1, 2], [2, 1, 0]])
    dist = torch.tensor([[0.1, 0.3, 0.6], [0.2, 1.0, 1.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    out = weighted_knn_mean(ref, idx, dist)
    w = (1 - torch.tensor([0.1, 0.3, 0.6]) / 1.0) / 2
    assert out[0, 0] == pytest.approx(float((w * ref[:, 0]).sum()))
    assert out[1, 0] == pytest.approx(1.0)  # single kept neighbour gets weight 1
    assert out[2, 0] == pytest.approx(3.0)  # none kept: uniform over all
    assert out[3, 0] == pytest.approx(3.0)  # all distances zero: uniform over kept
    assert torch.isfinite(out).all() and (out[:, 1] == 0).all()
    blend = final_blend(torch.tensor([[2.0, 1.0], [0.5, 0.2]]), torch.tensor([[4.0, 0.0], [2.0, 0.0]]), 0.7)
    assert torch.isfinite(blend).all()
    assert blend[0, 0] == pytest.approx(0.7 * 2 + 0.3 * 2.0)  # column max rescaled to the global max 2
    assert blend[0, 1] == pytest.approx(0.7 * 1.0)  # all-zero kNN column contributes 0
