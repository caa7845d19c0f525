"""Real-data smoke test of the benchmark (skipped when ../shared/data is absent)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from spatialimpute._settings import settings
from spatialimpute.benchmark import list_datasets, run_benchmark

pytestmark = pytest.mark.realdata

DATA_DIR = Path(os.environ.get("SPATIALIMPUTE_DATA_DIR", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))
PAIR = "osmfish_somatosensory"


@pytest.fixture(scope="module")
def data_dir():
    if PAIR not in list_datasets(DATA_DIR):
        pytest.skip(f"shared benchmark data not found at {DATA_DIR} (set SPATIALIMPUTE_DATA_DIR)")
    return DATA_DIR


def test_knn_benchmark_osmfish(data_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(settings, "progress", False)
    res = run_benchmark(PAIR, data_dir=data_dir, methods="knn", out=tmp_path, n_folds=5, device="cpu")
    assert len(res.genes) == 33 and sum(len(f) for f in res.folds) == 33
    s = res.to_dict()["methods"]["knn"]
    # a cosine kNN baseline reaches a clearly positive held-out accuracy on this pair (about 0.2)
    assert 0.1 < s["gene_metrics"]["spcc"]["mean"] < 0.6
    assert np.isfinite(res.predictions["knn"].X).all()
    assert res.to_dict()["protocol"]["labels_key"] == "cell_type"
    assert s["clustering"]["n_labels"] == 31
    assert 0.0 < s["clustering"]["imputed_vs_labels"]["ari"] <= 1.0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["protocol"]["n_spatial_cells"] == 3089
