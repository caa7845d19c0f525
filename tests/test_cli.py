"""The command line end to end: simulate -> impute -> read back; errors exit non-zero with one line."""

from __future__ import annotations

import anndata
import numpy as np
import pytest

from spatialimpute.cli import main


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    assert main(["--no-progress", "simulate", "--out", str(out), "--n-spatial", "300", "--n-reference", "400",
                 "--n-genes", "60", "--n-panel", "25", "--seed", "2"]) == 0
    return out


def test_simulate_writes_three_files(simulated):
    spatial = anndata.read_h5ad(simulated / "spatial.h5ad")
    reference = anndata.read_h5ad(simulated / "reference.h5ad")
    truth = anndata.read_h5ad(simulated / "truth.h5ad")
    assert spatial.shape == (300, 25) and reference.shape == (400, 60) and truth.shape == (300, 60)


def test_impute_end_to_end(simulated, tmp_path, capsys):
    out = tmp_path / "imputed.h5ad"
    code = main(["--no-progress", "impute", "--spatial", str(simulated / "spatial.h5ad"), "--reference",
                 str(simulated / "reference.h5ad"), "--out", str(out), "--method", "knn", "--param", "k=15"])
    assert code == 0
    result = anndata.read_h5ad(out)
    assert result.shape == (300, 35)
    assert result.uns["spatialimpute"]["config"]["architecture"]["k"] == 15
    assert "imputed 35 genes for 300 cells" in capsys.readouterr().out
    assert not list(tmp_path.glob(".*"))  # atomic write leaves no temporary files behind


def test_impute_default_is_auto_and_prints_its_choice(simulated, tmp_path, capsys):
    out = tmp_path / "auto.h5ad"
    code = main(["--no-progress", "impute", "--spatial", str(simulated / "spatial.h5ad"), "--reference",
                 str(simulated / "reference.h5ad"), "--out", str(out), "--param", 'members=["knn"]', "--threads", "1"])
    assert code == 0
    result = anndata.read_h5ad(out)
    assert result.uns["spatialimpute"]["method"] == "auto" and {"lower", "upper"} <= set(result.layers)
    printed = capsys.readouterr().out
    assert "knn_k50_similarity" in printed and "weight" in printed and "with auto" in printed


def test_impute_selected_genes(simulated, tmp_path):
    spatial = anndata.read_h5ad(simulated / "spatial.h5ad")
    genes_file = tmp_path / "genes.txt"
    genes_file.write_text("\n".join(spatial.var_names[:3]) + "\n")
    out = tmp_path / "val.h5ad"
    assert main(["--no-progress", "impute", "--spatial", str(simulated / "spatial.h5ad"), "--reference",
                 str(simulated / "reference.h5ad"), "--out", str(out), "--method", "knn", "--genes-file", str(genes_file)]) == 0
    result = anndata.read_h5ad(out)
    assert list(result.var_names) == list(spatial.var_names[:3]) and result.var["in_panel"].all()


@pytest.mark.parametrize("extra, message", [
    (["--method", "magic"], "`method`"),
    (["--genes", "NotAGene"], "absent"),
    (["--param", "nokey"], "KEY=VALUE"),
])
def test_bad_input_gives_one_line_error(simulated, tmp_path, capsys, extra, message):
    code = main(["--no-progress", "impute", "--spatial", str(simulated / "spatial.h5ad"), "--reference",
                 str(simulated / "reference.h5ad"), "--out", str(tmp_path / "x.h5ad"), *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1 and err.startswith("spatialimpute impute: error:")
    assert not (tmp_path / "x.h5ad").exists()


def test_missing_file_error(tmp_path, capsys):
    assert main(["impute", "--spatial", str(tmp_path / "none.h5ad"), "--reference", "r.h5ad", "--out", "o.h5ad"]) == 2
    assert "existing file" in capsys.readouterr().err


def test_benchmark_on_files(simulated, tmp_path, capsys):
    out = tmp_path / "bench"
    assert main(["--no-progress", "benchmark", "--spatial", str(simulated / "spatial.h5ad"), "--reference",
                 str(simulated / "reference.h5ad"), "--methods", "knn", "--folds", "3", "--out", str(out)]) == 0
    assert "| knn |" in capsys.readouterr().out
    assert any(out.glob("*.json")) and any(out.glob("*.png")) and any(out.glob("*.md")) and any(out.glob("*.csv"))


def test_benchmark_needs_data_source(capsys, tmp_path):
    assert main(["benchmark", "--out", str(tmp_path)]) == 2
    assert "error" in capsys.readouterr().err


def test_info(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "methods: auto, stimpute, stgnet, knn, mapping" in out and "device:" in out


def test_demo_knn(tmp_path, capsys):
    assert main(["--no-progress", "demo", "--method", "knn", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    spcc = float(out.split("SPCC ")[1].split(",")[0])
    assert spcc > 0.15
    assert (tmp_path / "imputed.h5ad").is_file() and (tmp_path / "spatial_maps.png").stat().st_size > 10_000
    assert np.isfinite(anndata.read_h5ad(tmp_path / "imputed.h5ad").X).all()
