"""Leave-genes-out cross-validation runner: no leakage, fold coverage, determinism, reports."""

from __future__ import annotations

import json

import anndata
import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import KFold

from spatialimpute._settings import settings
from spatialimpute._validation import SpatialImputeInputError
from spatialimpute.benchmark import cross_validate, list_datasets, make_gene_folds, run_benchmark
from spatialimpute.benchmark.cv import LIBRARY_SIZE_KEY
from spatialimpute.benchmark.metrics import GENE_METRICS
from spatialimpute.benchmark.shared_data import dataset_paths
from spatialimpute.model._base import BaseImputer

N_SHARED = 12


@pytest.fixture(autouse=True)
def _no_progress(monkeypatch):
    monkeypatch.setattr(settings, "progress", False)


def _pair(seed: int = 0):
    """Three cell types with their own gene programs; shared genes g00..g11 (named out of
    sorted order in the spatial object), one spatial-only gene and two reference-only genes."""
    rng = np.random.default_rng(seed)
    n_types = 3
    shared = [f"g{i:02d}" for i in range(N_SHARED)]
    programs = rng.gamma(0.7, 3.0, size=(n_types, N_SHARED + 3))
    sp_types = rng.integers(0, n_types, 120)
    ref_types = rng.integers(0, n_types, 150)
    sp_counts = rng.poisson(programs[sp_types] * rng.uniform(0.5, 1.5, (120, 1))).astype(np.float32)
    ref_counts = rng.poisson(programs[ref_types] * 3.0).astype(np.float32)
    sp_genes = shared[::-1] + ["spatial_only"]  # spatial order differs from sorted order
    sp_x = np.concatenate([sp_counts[:, :N_SHARED][:, ::-1], sp_counts[:, [N_SHARED]]], axis=1)
    spatial = anndata.AnnData(
        X=sp_x, obs=pd.DataFrame({"cell_type": [f"t{t}" for t in sp_types]}, index=[f"c{i}" for i in range(120)]),
        var=pd.DataFrame(index=sp_genes),
    )
    spatial.obsm["spatial"] = rng.uniform(0, 100, size=(120, 2))
    ref_genes = shared + ["ref_only_a", "ref_only_b"]
    ref_x = np.concatenate([ref_counts[:, :N_SHARED], ref_counts[:, N_SHARED + 1:]], axis=1)
    reference = anndata.AnnData(X=ref_x, obs=pd.DataFrame(index=[f"r{i}" for i in range(150)]),
                                var=pd.DataFrame(index=ref_genes))
    return spatial, reference, shared


class SpyImputer(BaseImputer):
    """Records everything it is shown; predicts each target as the reference mean scaled by
    the cell's relative depth (not constant over cells)."""

    method_name = "spy"
    seen: list = []

    def __init__(self, spatial, reference, genes=None, **kwargs):
        key = kwargs.get("library_size_key")
        SpyImputer.seen.append({
            "spatial_genes": list(spatial.var_names),
            "reference_genes": list(reference.var_names),
            "genes": list(genes),
            "library_size_key": key,
            "library_size": spatial.obs[key].to_numpy().copy() if key else None,
            "spatial_counts": np.asarray(spatial.X).copy(),
            "coords": np.asarray(spatial.obsm["spatial"]).copy(),
            "seed": kwargs.get("seed"),
        })
        super().__init__(spatial, reference, genes, **kwargs)

    def _fit(self) -> None:
        self.seen[-1]["feature_genes"] = list(self.paired.feature_genes)

    def _predict(self) -> np.ndarray:
        p = self.paired
        depth = np.asarray(p.spatial_X).mean(axis=1, keepdims=True)
        return depth * p.reference_targets.mean(axis=0, keepdims=True)

    def _reliability(self, prediction: np.ndarray) -> np.ndarray:
        return np.linspace(0.1, 0.9, prediction.shape[1])


def test_folds_match_kfold_on_sorted_genes_and_cover_each_gene_once():
    genes = [f"g{i:02d}" for i in range(23)]
    folds = make_gene_folds(genes, 5, random_state=0)
    expected = [[genes[i] for i in test] for _, test in KFold(5, shuffle=True, random_state=0).split(genes)]
    assert folds == expected
    flat = [g for f in folds for g in f]
    assert sorted(flat) == genes and len(flat) == len(set(flat))
    assert [len(f) for f in folds] == [5, 5, 5, 4, 4]
    with pytest.raises(SpatialImputeInputError, match="n_folds"):
        make_gene_folds(genes[:3], 5)


def test_spy_never_sees_heldout_genes():
    spatial, reference, shared = _pair()
    spatial_before, reference_before = spatial.copy(), reference.copy()
    SpyImputer.seen = []
    res = cross_validate(spatial, reference, methods=[SpyImputer], n_folds=4, seed=7, device="cpu", clustering=False)
    seen = SpyImputer.seen
    assert len(seen) == 4
    assert res.genes == sorted(shared)
    expected = make_gene_folds(sorted(shared), 4, random_state=0)
    assert res.folds == expected
    all_lib = spatial.X.sum(axis=1)  # full panel, including the spatial-only gene
    for k, view in enumerate(seen):
        held = set(expected[k])
        assert view["genes"] == expected[k]  # targets are exactly the held-out fold
        assert held.isdisjoint(view["spatial_genes"])  # never shown in the spatial data
        assert held.isdisjoint(view["feature_genes"])
        assert view["spatial_genes"] == [g for g in sorted(shared) if g not in held]  # training genes only
        assert view["reference_genes"] == list(reference.var_names)  # the whole reference
        assert view["library_size_key"] == LIBRARY_SIZE_KEY
        np.testing.assert_allclose(view["library_size"], all_lib)
        cols = [list(spatial.var_names).index(g) for g in view["spatial_genes"]]
        np.testing.assert_array_equal(view["spatial_counts"], spatial.X[:, cols])  # raw counts
        np.testing.assert_array_equal(view["coords"], spatial.obsm["spatial"])
        assert view["seed"] == 7
    # every shared gene predicted exactly once, by the fold that held it out
    pred = res.predictions["spy"]
    assert list(pred.var_names) == sorted(shared)
    assert (pred.var["fold"].to_numpy() == [k for g in sorted(shared) for k, f in enumerate(expected) if g in f]).all()
    # reliability assembled per fold in the held-out order
    for k, fold in enumerate(expected):
        np.testing.assert_allclose(pred.var.loc[fold, "reliability"], np.linspace(0.1, 0.9, len(fold)), rtol=1e-6)
    # the caller's objects are untouched
    for before, after in ((spatial_before, spatial), (reference_before, reference)):
        np.testing.assert_array_equal(before.X, after.X)
        assert before.obs.equals(after.obs) and list(before.var_names) == list(after.var_names)
    assert LIBRARY_SIZE_KEY not in spatial.obs


def test_truth_is_normalised_on_the_full_gene_set():
    spatial, reference, shared = _pair()
    SpyImputer.seen = []
    res = cross_validate(spatial, reference, methods=[SpyImputer], n_folds=3, device="cpu", clustering=False)
    counts = spatial.X.astype(np.float64)
    lib = counts.sum(axis=1)
    expected = np.log1p(counts / lib[:, None] * np.median(lib))
    cols = [list(spatial.var_names).index(g) for g in sorted(shared)]
    np.testing.assert_allclose(res.truth.X, expected[:, cols], rtol=1e-6)
    assert list(res.truth.var_names) == sorted(shared)


def test_knn_cv_scores_and_determinism():
    spatial, reference, shared = _pair()
    a = cross_validate(spatial, reference, methods="knn", n_folds=3, seed=0, device="cpu",
                       method_params={"knn": {"k": 10, "n_components": 5}})
    b = cross_validate(spatial, reference, methods=["knn"], n_folds=3, seed=0, device="cpu",
                       method_params={"knn": {"k": 10, "n_components": 5}})
    np.testing.assert_array_equal(a.predictions["knn"].X, b.predictions["knn"].X)
    pd.testing.assert_frame_equal(a.gene_scores["knn"], b.gene_scores["knn"])
    assert a.clustering["knn"] == b.clustering["knn"]
    scores = a.gene_scores["knn"]
    assert list(scores.index) == sorted(shared)
    assert set(GENE_METRICS) <= set(scores.columns)
    assert scores["spcc"].mean() > 0.3  # the planted cell-type programs are learnable
    s = a.to_dict()["methods"]["knn"]
    assert s["gene_metrics"]["spcc"]["mean"] == pytest.approx(scores["spcc"].mean())
    assert s["gene_metrics"]["spcc"]["median"] == pytest.approx(scores["spcc"].median())
    assert set(s["clustering"]) >= {"imputed_vs_measured", "imputed_vs_labels", "measured_vs_labels"}
    assert len(s["cost"]["folds"]) == 3 and s["cost"]["peak_rss_mib"] > 0
    assert a.to_dict()["machine"]["cpu_count"] >= 1
    json.dumps(a.to_dict(), allow_nan=False)  # JSON-ready
    table = a.summary  # methods x metrics, printable
    assert isinstance(table, pd.DataFrame) and list(table.index) == ["knn"]
    assert table.loc["knn", "spcc"] == pytest.approx(scores["spcc"].mean())
    assert table.loc["knn", "spcc_median"] == pytest.approx(scores["spcc"].median())
    assert {"css_cell", "ari", "calib_rho", "wall_s"} <= set(table.columns)
    assert "knn" in str(table) and len(str(table)) < 2000
    assert a.cell_scores["knn"].shape[0] == spatial.n_obs


def test_bad_arguments():
    spatial, reference, _ = _pair()
    with pytest.raises(SpatialImputeInputError, match="method"):
        cross_validate(spatial, reference, methods=["no_such_method"], device="cpu")
    with pytest.raises(SpatialImputeInputError, match="method_params"):
        cross_validate(spatial, reference, methods=["knn"], method_params={"knnn": {}}, device="cpu")
    with pytest.raises(SpatialImputeInputError, match="n_folds"):
        cross_validate(spatial, reference, methods=["knn"], n_folds=50, device="cpu")
    no_coords = spatial.copy()
    del no_coords.obsm["spatial"]
    with pytest.raises(SpatialImputeInputError, match="spatial"):
        cross_validate(no_coords, reference, methods=["knn"], device="cpu")


def test_run_benchmark_writes_report(tmp_path):
    spatial, reference, shared = _pair()
    data_dir = tmp_path / "data"
    (data_dir / "toy").mkdir(parents=True)
    spatial.write_h5ad(data_dir / "toy" / "spatial.h5ad")
    reference.write_h5ad(data_dir / "toy" / "scrna.h5ad")
    (data_dir / "incomplete").mkdir()
    assert list_datasets(data_dir) == ["toy"]
    with pytest.raises(FileNotFoundError, match="toy"):
        dataset_paths("nope", data_dir)
    out = tmp_path / "out"
    res = run_benchmark("toy", data_dir=data_dir, methods="knn", out=out, n_folds=2, device="cpu",
                        method_params={"knn": {"k": 10, "n_components": 5}})
    names = {p.name for p in out.iterdir()}
    assert names == {"gene_metrics.csv", "cell_metrics.csv", "summary.json", "summary.md", "spcc.png"}
    genes = pd.read_csv(out / "gene_metrics.csv")
    assert len(genes) == N_SHARED and set(genes["method"]) == {"knn"}
    assert sorted(genes["gene"]) == sorted(shared)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dataset"] == "toy"
    assert summary["methods"]["knn"]["gene_metrics"]["spcc"]["mean"] == pytest.approx(genes["spcc"].mean())
    md = (out / "summary.md").read_text()
    assert "| knn |" in md and "SPCC" in md
    assert (out / "spcc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert res.to_dict()["outputs"]["figure"].endswith("spcc.png")
    # files given directly
    res2 = run_benchmark(spatial=data_dir / "toy" / "spatial.h5ad", reference=reference, methods="knn", n_folds=2,
                         device="cpu", method_params={"knn": {"k": 10, "n_components": 5}})
    np.testing.assert_array_equal(res2.predictions["knn"].X, res.predictions["knn"].X)
    with pytest.raises(SpatialImputeInputError, match="dataset"):
        run_benchmark("toy", spatial=spatial, reference=reference, data_dir=data_dir)


def test_sparse_and_layer_inputs_give_the_same_result():
    import scipy.sparse as sp

    spatial, reference, _ = _pair()
    SpyImputer.seen = []
    dense = cross_validate(spatial, reference, methods=[SpyImputer], n_folds=3, device="cpu", clustering=False)
    sparse_sp = spatial.copy()
    sparse_sp.X = sp.csr_matrix(spatial.X)
    layered_ref = reference.copy()
    layered_ref.layers["counts"] = layered_ref.X.copy()
    layered_ref.X = np.zeros_like(layered_ref.X)  # would break the method if used
    other = cross_validate(sparse_sp, layered_ref, methods=[SpyImputer], n_folds=3, device="cpu",
                           clustering=False, reference_layer="counts")
    np.testing.assert_allclose(other.truth.X, dense.truth.X, rtol=1e-6)
    np.testing.assert_allclose(other.predictions["spy"].X, dense.predictions["spy"].X, rtol=1e-6)
