"""Metric functions of the benchmark against hand-computed values and against scipy."""

from __future__ import annotations

import math

import anndata
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy.spatial.distance import cosine as scipy_cosine_distance
from scipy.spatial.distance import jensenshannon
from scipy.stats import pearsonr, spearmanr, zscore

from spatialimpute.benchmark import calibration, cell_metrics, clustering_agreement, gene_metrics, metrics
from spatialimpute.benchmark.calibration import reliability_calibration
from spatialimpute.benchmark.clustering_agreement import partition_agreement

C1, C2 = 0.01**2, 0.03**2


def _col(*values):
    return np.asarray(values, dtype=float).reshape(-1, 1)


def _one(truth, pred) -> pd.Series:
    return gene_metrics(truth, pred).iloc[0]


# --------------------------------------------------------------------------- hand-computed values
def test_hand_computed_permuted_ranks():
    # x = 1..4, y swaps the middle two values.
    row = _one(_col(1, 2, 3, 4), _col(1, 3, 2, 4))
    # centred: x [-1.5,-.5,.5,1.5], y [-1.5,.5,-.5,1.5]; sum xy = 4, sum xx = sum yy = 5
    assert row["pcc"] == pytest.approx(0.8, abs=1e-12)
    assert row["spcc"] == pytest.approx(0.8, abs=1e-12)
    # min-max: x [0,1/3,2/3,1], y [0,2/3,1/3,1]; means 1/2, variances 5/36, covariance 1/9
    ssim = (2 * 0.25 + C1) * (2 / 9 + C2) / ((0.25 + 0.25 + C1) * (5 / 36 + 5 / 36 + C2))
    assert row["ssim"] == pytest.approx(ssim, abs=1e-12)
    # z-scores differ by [0,-1,1,0]/sqrt(1.25) -> mean square 0.4 (= 2 - 2 pcc)
    assert row["rmse"] == pytest.approx(math.sqrt(0.4), abs=1e-12)
    # p = [.1,.2,.3,.4], q = [.1,.3,.2,.4], m = [.1,.25,.25,.4]
    js = 0.2 * math.log(0.8) + 0.3 * math.log(1.2)
    assert row["js"] == pytest.approx(js, abs=1e-12)
    assert row["css_gene"] == pytest.approx(29 / 30, abs=1e-12)
    assert row["mse_gene"] == pytest.approx(0.5, abs=1e-12)
    assert not row["pcc_undefined"] and not row["spcc_undefined"] and not row["css_gene_undefined"]


def test_hand_computed_spearman_with_ties_uses_average_ranks():
    # ranks x [1.5,1.5,3,4], y [1,2,3.5,3.5] -> centred sums 4 / sqrt(4.5 * 4.5)
    row = _one(_col(1, 1, 2, 3), _col(1, 2, 3, 3))
    assert row["spcc"] == pytest.approx(8 / 9, abs=1e-12)


def test_constant_truth_gene_is_undefined_and_scaled_to_zero():
    row = _one(_col(2, 2, 2, 2), _col(1, 2, 3, 4))
    assert row["pcc"] == 0.0 and row["spcc"] == 0.0
    assert row["pcc_undefined"] and row["spcc_undefined"]
    # cosine is defined: 20 / (4 * sqrt(30))
    assert row["css_gene"] == pytest.approx(5 / math.sqrt(30), abs=1e-12)
    assert not row["css_gene_undefined"]
    # constant -> all-zero after min-max scaling: mx = 0, sx = 0, sxy = 0
    assert row["ssim"] == pytest.approx(C1 * C2 / ((0.25 + C1) * (5 / 36 + C2)), abs=1e-12)
    # constant -> all-zero z-scores; the other z-vector has mean square 1
    assert row["rmse"] == pytest.approx(1.0, abs=1e-12)
    # p uniform, q = [.1,.2,.3,.4]
    p = np.full(4, 0.25)
    q = np.array([0.1, 0.2, 0.3, 0.4])
    m = (p + q) / 2
    js = 0.5 * np.sum(p * np.log(p / m)) + 0.5 * np.sum(q * np.log(q / m))
    assert row["js"] == pytest.approx(js, abs=1e-12)
    assert row["mse_gene"] == pytest.approx(1.5, abs=1e-12)


def test_constant_float_vector_does_not_produce_roundoff_correlations():
    # 0.1 repeated: its float mean is not exactly 0.1, the centred vector is not exactly 0.
    row = _one(_col(*([0.1] * 7)), _col(1, 5, 2, 6, 3, 7, 4))
    assert row["pcc"] == 0.0 and row["pcc_undefined"]
    assert row["rmse"] == pytest.approx(1.0, abs=1e-12)


def test_all_zero_and_negative_predictions():
    df = gene_metrics(np.array([[0, 0], [1, 1], [0, 0], [3, 3.0]]), np.array([[0, -1], [0, 2], [0, -3], [0, 2.0]]))
    zero, neg = df.iloc[0], df.iloc[1]
    # all-zero prediction: correlations and cosine undefined -> 0; JS against the uniform distribution
    assert zero["css_gene"] == 0.0 and zero["css_gene_undefined"] and zero["pcc_undefined"]
    p = np.array([0, 0.25, 0, 0.75])
    u = np.full(4, 0.25)
    m = (p + u) / 2
    js = 0.5 * np.sum(p[p > 0] * np.log(p[p > 0] / m[p > 0])) + 0.5 * np.sum(u * np.log(u / m))
    assert zero["js"] == pytest.approx(js, abs=1e-12)
    # negative predictions clipped: q = [0,.5,0,.5], m = [0,.375,0,.625]
    js_neg = 0.5 * (0.25 * math.log(0.25 / 0.375) + 0.75 * math.log(0.75 / 0.625)) + 0.5 * (
        0.5 * math.log(0.5 / 0.375) + 0.5 * math.log(0.5 / 0.625)
    )
    assert neg["js"] == pytest.approx(js_neg, abs=1e-12)
    # cosine and MSE use the unclipped values: x.y = 0+2+0+6 = 8, |x| = sqrt(10), |y| = sqrt(18)
    assert neg["css_gene"] == pytest.approx(8 / math.sqrt(180), abs=1e-12)
    assert neg["mse_gene"] == pytest.approx((1 + 1 + 9 + 1) / 4, abs=1e-12)
    assert df.attrs["n_undefined"] == {"spcc": 1, "pcc": 1, "css_gene": 1}


def test_identical_constant_vectors():
    row = _one(_col(3, 3, 3), _col(3, 3, 3))
    assert row["ssim"] == pytest.approx(1.0, abs=1e-12)
    assert row["rmse"] == 0.0 and row["js"] == pytest.approx(0.0, abs=1e-15) and row["mse_gene"] == 0.0
    assert row["pcc"] == 0.0 and row["pcc_undefined"]
    assert row["css_gene"] == pytest.approx(1.0, abs=1e-12)


def test_perfect_prediction():
    rng = np.random.default_rng(1)
    x = rng.gamma(1.0, 1.0, size=(50, 4))
    df = gene_metrics(x, x)
    np.testing.assert_allclose(df[["spcc", "pcc", "ssim", "css_gene"]].to_numpy(), 1.0, atol=1e-12)
    np.testing.assert_allclose(df[["rmse", "js", "mse_gene"]].to_numpy(), 0.0, atol=1e-12)


def test_cell_metrics_hand_computed():
    df = cell_metrics(np.array([[1.0, 0.0], [0.0, 0.0]]), np.array([[1.0, 1.0], [2.0, 0.0]]))
    assert df["css_cell"].tolist() == pytest.approx([1 / math.sqrt(2), 0.0], abs=1e-12)
    assert df["mse_cell"].tolist() == pytest.approx([0.5, 2.0], abs=1e-12)
    assert df["css_cell_undefined"].tolist() == [False, True]
    assert df.attrs["n_undefined"] == {"css_cell": 1}
    assert list(df.columns[:2]) == ["css_cell", "mse_cell"]


# --------------------------------------------------------------------------- against scipy
def _ssim_loop(x: np.ndarray, y: np.ndarray) -> float:
    def scale(v):
        span = v.max() - v.min()
        return np.zeros_like(v) if span == 0 else (v - v.min()) / span

    xs, ys = scale(x), scale(y)
    mx, my = xs.mean(), ys.mean()
    sx, sy = xs.std(), ys.std()
    sxy = np.mean((xs - mx) * (ys - my))
    return (2 * mx * my + C1) * (2 * sxy + C2) / ((mx**2 + my**2 + C1) * (sx**2 + sy**2 + C2))


@pytest.fixture(scope="module")
def random_pair():
    rng = np.random.default_rng(0)
    truth = rng.poisson(rng.gamma(0.6, 2.0, size=(1, 40)), size=(300, 40)).astype(float)  # integers: many ties
    truth = np.log1p(truth)
    pred = 0.6 * truth + rng.normal(0, 0.4, size=truth.shape)  # some negative predictions
    pred[:, 3] = 0.0  # an all-zero prediction
    return truth, pred


def test_against_scipy(random_pair):
    truth, pred = random_pair
    df = gene_metrics(truth, pred)
    for j in range(truth.shape[1]):
        x, y = truth[:, j], pred[:, j]
        row = df.iloc[j]
        if np.ptp(y) == 0 or np.ptp(x) == 0:
            assert row["pcc"] == 0 and row["spcc"] == 0 and row["pcc_undefined"]
        else:
            assert row["pcc"] == pytest.approx(pearsonr(x, y)[0], abs=1e-10)
            assert row["spcc"] == pytest.approx(spearmanr(x, y)[0], abs=1e-10)
            assert row["rmse"] == pytest.approx(np.sqrt(np.mean((zscore(x) - zscore(y)) ** 2)), abs=1e-10)
            assert row["css_gene"] == pytest.approx(1 - scipy_cosine_distance(x, y), abs=1e-10)
        p = np.clip(x, 0, None)
        q = np.clip(y, 0, None)
        p = p / p.sum() if p.sum() > 0 else np.full(p.size, 1 / p.size)
        q = q / q.sum() if q.sum() > 0 else np.full(q.size, 1 / q.size)
        # scipy returns the square root of the divergence
        assert row["js"] == pytest.approx(jensenshannon(p, q) ** 2, abs=1e-10)
        assert row["ssim"] == pytest.approx(_ssim_loop(x, y), abs=1e-10)
        assert row["mse_gene"] == pytest.approx(np.mean((x - y) ** 2), abs=1e-12)
    assert df.loc[3, "css_gene_undefined"] and df.attrs["n_undefined"]["css_gene"] == 1
    cells = cell_metrics(truth, pred)
    for i in range(0, truth.shape[0], 37):
        assert cells.iloc[i]["css_cell"] == pytest.approx(1 - scipy_cosine_distance(truth[i], pred[i]), abs=1e-10)
        assert cells.iloc[i]["mse_cell"] == pytest.approx(np.mean((truth[i] - pred[i]) ** 2), abs=1e-12)


def test_blocking_does_not_change_results(random_pair, monkeypatch):
    truth, pred = random_pair
    whole = gene_metrics(truth, pred)
    whole_cells = cell_metrics(truth, pred)
    monkeypatch.setattr(metrics, "_BLOCK_ELEMENTS", 7 * truth.shape[0])  # blocks of 7 genes
    pd.testing.assert_frame_equal(gene_metrics(truth, pred), whole)
    pd.testing.assert_frame_equal(cell_metrics(truth, pred), whole_cells)


# --------------------------------------------------------------------------- input forms
def test_input_forms_agree_and_carry_names(random_pair):
    truth, pred = random_pair
    truth, pred = truth[:20, :5], pred[:20, :5]
    genes = [f"g{i}" for i in range(5)]
    cells = [f"c{i}" for i in range(20)]
    base = gene_metrics(truth, pred)
    assert list(base.index) == list(range(5))
    frame = gene_metrics(pd.DataFrame(truth, index=cells, columns=genes), sp.csr_matrix(pred))
    assert list(frame.index) == genes
    np.testing.assert_array_equal(frame.to_numpy(), base.to_numpy())
    ad_truth = anndata.AnnData(truth.astype(np.float64), obs=pd.DataFrame(index=cells), var=pd.DataFrame(index=genes))
    by_ad = gene_metrics(ad_truth, pred)
    assert list(by_ad.index) == genes
    assert list(cell_metrics(ad_truth, pred).index) == cells


def test_inputs_not_modified(random_pair):
    truth, pred = random_pair
    t0, p0 = truth.copy(), pred.copy()
    gene_metrics(truth, pred)
    cell_metrics(truth, pred)
    np.testing.assert_array_equal(truth, t0)
    np.testing.assert_array_equal(pred, p0)


@pytest.mark.parametrize(
    "truth, pred, match",
    [
        (np.zeros((3, 2)), np.zeros((3, 3)), "shape"),
        (np.zeros(3), np.zeros(3), "2-D"),
        (np.zeros((3, 2)), np.array([[0, np.nan]] * 3), "NaN"),
        (pd.DataFrame(np.zeros((2, 2)), columns=["a", "b"]), pd.DataFrame(np.zeros((2, 2)), columns=["b", "a"]),
         "gene names"),
    ],
)
def test_bad_inputs(truth, pred, match):
    with pytest.raises(ValueError, match=match):
        gene_metrics(truth, pred)


# --------------------------------------------------------------------------- calibration / clustering
def test_reliability_calibration_hand_computed():
    spcc = np.array([0.1, 0.5, 0.3, 0.7, 0.2])
    rel = np.array([0.2, 0.6, 0.1, 0.9, np.nan])  # last gene has no score
    out = reliability_calibration(rel, spcc)
    # scored genes: rel ranks [2,3,1,4], spcc ranks [1,3,2,4] -> rho = 1 - 6*2/(4*15) = 0.8
    assert out["spearman"] == pytest.approx(0.8, abs=1e-12)
    assert out["n_genes"] == 4 and out["n_top"] == 2
    assert out["mean_spcc_top_half"] == pytest.approx((0.7 + 0.5) / 2)
    assert out["mean_spcc_all"] == pytest.approx((0.1 + 0.5 + 0.3 + 0.7) / 4)
    flat = reliability_calibration(np.full(4, 0.5), spcc[:4])
    assert flat["spearman"] == 0.0 and flat["spearman_undefined"]
    none = reliability_calibration(np.full(3, np.nan), spcc[:3])
    assert none["spearman"] is None and none["n_genes"] == 0
    assert calibration.reliability_calibration is reliability_calibration


def test_partition_agreement_identical_and_relabelled():
    a = np.array([0, 0, 1, 1, 2, 2])
    out = partition_agreement(a, (a + 1) % 3)
    assert all(v == pytest.approx(1.0) for v in out.values())


def test_clustering_agreement_planted_clusters():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 6, size=(3, 8))
    labels = np.repeat(np.array(["a", "b", "c"]), 60)
    measured = centres[np.repeat(np.arange(3), 60)] + rng.normal(0, 0.5, size=(180, 8))
    imputed = measured + rng.normal(0, 0.1, size=measured.shape)
    out = clustering_agreement(measured, imputed, labels)
    assert out["imputed_vs_measured"]["ari"] > 0.5
    assert out["imputed_vs_labels"]["homogeneity"] > 0.9
    assert out["measured_vs_labels"]["homogeneity"] > 0.9
    assert out["n_labels"] == 3
    noise = rng.normal(size=measured.shape)
    worse = clustering_agreement(measured, noise, labels)
    assert worse["imputed_vs_labels"]["ari"] < 0.2 < out["imputed_vs_labels"]["ari"]


def test_average_ranks_match_scipy_rankdata():
    from scipy.stats import rankdata

    from spatialimpute._stats import average_ranks, spearman_columns

    rng = np.random.default_rng(3)
    for shape in [(1, 3), (6, 1), (40, 9)]:
        ties = rng.integers(0, 4, size=shape).astype(float)
        distinct = rng.normal(size=shape)
        for x in (ties, distinct):
            np.testing.assert_array_equal(average_ranks(x), rankdata(x, axis=0))
    x, y = rng.normal(size=(30, 4)), rng.normal(size=(30, 4))
    expected = [spearmanr(x[:, j], y[:, j])[0] for j in range(4)]
    np.testing.assert_allclose(spearman_columns(x, y), expected, rtol=1e-12)
