"""One regression test per defect of issue 15: clean errors, names not positions, nothing left behind."""

from __future__ import annotations

import json
import os
import signal
import warnings

import anndata
import numpy as np
import pytest
from safetensors.torch import load_file, save_file

from spatialimpute._io import write_h5ad
from spatialimpute._validation import SpatialImputeInputError, SpatialImputeWarning, prepare_pair
from spatialimpute.cli import main
from spatialimpute.data.embeddings import read_embedding_table
from spatialimpute.datasets import simulate_pair
from spatialimpute.model.knn import KNNImpute
from spatialimpute.model.stimpute import StImpute


@pytest.fixture(scope="module")
def tiny():
    return simulate_pair(n_spatial=120, n_reference=150, n_genes=30, n_panel=12, n_cell_types=3, n_domains=2,
                         spatial_depth=200, seed=4)


@pytest.fixture(scope="module")
def knn_folder(tiny, tmp_path_factory):
    spatial, reference, _ = tiny
    model = KNNImpute(spatial, reference, k=10, device="cpu").train()
    path = tmp_path_factory.mktemp("knn") / "model"
    model.save(path)
    return path, model.impute()


def _shuffled(spatial, reference, seed=0):
    rng = np.random.default_rng(seed)
    sp = spatial[rng.permutation(spatial.n_obs)].copy()
    sp = sp[:, sp.var_names[rng.permutation(sp.n_vars)]].copy()
    return sp, reference[rng.permutation(reference.n_obs)].copy()


# ---------------------------------------------------------------- item 1: names, not positions
def test_item1_knn_load_follows_cell_and_gene_names(tiny, knn_folder):
    spatial, reference, _ = tiny
    path, fresh = knn_folder
    sp, ref = _shuffled(spatial, reference)
    out = KNNImpute.load(path, sp, ref, device="cpu").impute()
    assert list(out.obs_names) == list(sp.obs_names)
    np.testing.assert_allclose(out[fresh.obs_names].X, fresh.X, atol=1e-6)
    np.testing.assert_array_equal(out.obsm["spatial"], sp.obsm["spatial"])


def test_item1_stimpute_load_follows_cell_names(tiny, tmp_path):
    spatial, reference, _ = tiny
    model = StImpute(spatial, reference, device="cpu", ae_epochs=2, gnn_steps=2, k=5, reliability_steps=2)
    fresh = model.impute()
    model.save(tmp_path / "m")
    sp, ref = _shuffled(spatial, reference, seed=1)
    out = StImpute.load(tmp_path / "m", sp, ref, device="cpu").impute()
    assert list(out.obs_names) == list(sp.obs_names)
    np.testing.assert_allclose(out[fresh.obs_names].X, fresh.X, rtol=1e-5, atol=1e-5)


def test_item1_load_refuses_other_cells_coordinates_and_edited_genes(tiny, knn_folder, tmp_path):
    spatial, reference, _ = tiny
    path, _ = knn_folder
    with pytest.raises(SpatialImputeInputError, match="^`spatial`.*cells the model was trained on"):
        KNNImpute.load(path, spatial[:100].copy(), reference)
    moved = spatial.copy()
    moved.obsm["spatial"] = moved.obsm["spatial"] * 2.0
    with pytest.raises(SpatialImputeInputError, match="coords"):
        KNNImpute.load(path, moved, reference)
    recounted = reference.copy()
    recounted.X = recounted.X * 2
    with pytest.raises(SpatialImputeInputError, match="^`reference`"):
        KNNImpute.load(path, spatial, recounted)
    # target genes reordered in the JSON: refused, not silently mislabelled
    edited = tmp_path / "edited"
    edited.mkdir()
    meta = json.loads((path / "model.json").read_text())
    meta["target_genes"] = meta["target_genes"][::-1]
    (edited / "model.json").write_text(json.dumps(meta))
    (edited / "state.safetensors").write_bytes((path / "state.safetensors").read_bytes())
    with pytest.raises(SpatialImputeInputError, match="state.safetensors"):
        KNNImpute.load(edited, spatial, reference)


# ---------------------------------------------------------------- item 2: gene case
def test_item2_genes_differing_in_case_warn_or_match_on_request(tiny):
    spatial, reference, _ = tiny
    sp = spatial.copy()
    renamed = sp.var_names[0].lower()
    sp.var_names = [renamed, *sp.var_names[1:]]
    with pytest.warns(SpatialImputeWarning, match=renamed):
        exact = prepare_pair(sp, reference)
    assert spatial.var_names[0] in exact.target_genes and renamed not in exact.feature_genes
    with pytest.warns(SpatialImputeWarning, match="ignoring case"):
        loose = prepare_pair(sp, reference, case_insensitive_genes=True)
    assert spatial.var_names[0] in loose.feature_genes and spatial.var_names[0] not in loose.target_genes
    assert loose.normalization["genes_matched_ignoring_case"] == {renamed: spatial.var_names[0]}
    twice = sp.copy()
    twice.var_names = [renamed, renamed.upper() + "_", *sp.var_names[2:]]
    ref = reference.copy()
    ref.var_names = [g if g != spatial.var_names[1] else renamed.swapcase() for g in ref.var_names]
    with pytest.raises(SpatialImputeInputError, match="case_insensitive_genes"):
        prepare_pair(twice, ref, case_insensitive_genes=True)


# ---------------------------------------------------------------- item 3: kNN k
@pytest.mark.parametrize("k", [0, -3, "abc", 2.5, "10", True])
def test_item3_knn_k_is_checked_before_training(tiny, k):
    spatial, reference, _ = tiny
    with pytest.raises(SpatialImputeInputError, match="^`k`"):
        KNNImpute(spatial, reference, k=k)


# ---------------------------------------------------------------- item 4: library sizes
@pytest.mark.parametrize("values", ["zeros", "negative", "nan", "text", "too_small"])
def test_item4_library_size_key_is_checked(tiny, values):
    spatial, reference, _ = tiny
    sp = spatial.copy()
    own = np.asarray(sp.X.sum(axis=1)).ravel()
    sp.obs["lib"] = {"zeros": np.zeros(sp.n_obs), "negative": -own, "nan": np.where(own > 0, np.nan, 1.0),
                     "text": ["x"] * sp.n_obs, "too_small": own / 2}[values]
    with pytest.raises(SpatialImputeInputError, match="^`library_size_key`"):
        prepare_pair(sp, reference, library_size_key="lib")
    sp.obs["lib"] = own * 3  # a larger total over all measured genes is what the option is for
    assert prepare_pair(sp, reference, library_size_key="lib").spatial_library_size[0] == own[0] * 3


# ---------------------------------------------------------------- item 5: clean errors
def _impute_cli(spatial, reference, out, *extra):
    return main(["--no-progress", "impute", "--spatial", str(spatial), "--reference", str(reference),
                 "--out", str(out), "--method", "knn", *extra])


@pytest.fixture(scope="module")
def files(tiny, tmp_path_factory):
    spatial, reference, _ = tiny
    d = tmp_path_factory.mktemp("files")
    write_h5ad(spatial, d / "spatial.h5ad")
    write_h5ad(reference, d / "reference.h5ad")
    return d


@pytest.mark.parametrize("content", ["truncated", "empty", "text", "hdf5"])
def test_item5_unreadable_h5ad_is_one_line(files, tmp_path, capsys, content):
    import h5py

    bad = tmp_path / "bad.h5ad"
    if content == "truncated":
        bad.write_bytes((files / "spatial.h5ad").read_bytes()[:2000])
    elif content == "empty":
        bad.write_bytes(b"")
    elif content == "text":
        bad.write_text("cell,gene\n")
    else:
        with h5py.File(bad, "w") as f:
            f["x"] = np.arange(3)
    assert _impute_cli(bad, files / "reference.h5ad", tmp_path / "o.h5ad") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("spatialimpute impute: error: `--spatial`") and len(err.splitlines()) == 1


@pytest.mark.parametrize("extra, message", [
    (["--threads", "0"], "`--threads`"),
    (["--param", "k=abc"], "`k`"),
    (["--param", "k=2.5"], "`k`"),
])
def test_item5_bad_options_are_one_line(files, tmp_path, capsys, extra, message):
    assert _impute_cli(files / "spatial.h5ad", files / "reference.h5ad", tmp_path / "o.h5ad", *extra) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_item5_out_directory_or_under_a_file(files, tmp_path, capsys):
    (tmp_path / "file").write_text("")
    for out in (tmp_path, tmp_path / "file" / "o.h5ad"):
        assert _impute_cli(files / "spatial.h5ad", files / "reference.h5ad", out) == 2
        assert "`--out`" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["empty", "ragged", "binary", "gzip", "delimiter", "nan", "text", "duplicate",
                                  "npz_keys", "npz_shape", "npz_object", "missing", "directory"])
def test_item5_bad_embedding_tables(tmp_path, kind):
    path = tmp_path / ("t.npz" if kind.startswith("npz") else "t.csv.gz" if kind == "gzip" else "t.csv")
    good = "gene,a,b\nA,1,2\nB,3,4\n"
    if kind == "empty":
        path.write_text("")
    elif kind == "ragged":
        path.write_text("gene,a,b\nA,1,2,3,4\nB,1\n")
    elif kind == "binary":
        path.write_bytes(bytes(range(256)) * 4)
    elif kind == "gzip":
        import gzip

        path.write_bytes(gzip.compress(good.encode() * 50)[:40])
    elif kind == "delimiter":
        path.write_text(good.replace(",", ";"))
    elif kind == "nan":
        path.write_text("gene,a,b\nA,1,2\nB,nan,nan\n")
    elif kind == "text":
        path.write_text("gene,a,b\nA,x,y\n")
    elif kind == "duplicate":
        path.write_text("gene,a,b\nA,1,2\na,3,4\n")
    elif kind == "npz_keys":
        np.savez(path, genes=np.array(["A"]), other=np.ones((1, 2)))
    elif kind == "npz_shape":
        np.savez(path, genes=np.array(["A", "B"]), embeddings=np.ones((3, 2)))
    elif kind == "npz_object":
        np.savez(path, genes=np.array(["A"], dtype=object), embeddings=np.ones((1, 2)))
    elif kind == "directory":
        path = tmp_path
    with pytest.raises(SpatialImputeInputError, match="gene_embeddings"):
        read_embedding_table(path)


@pytest.mark.parametrize("damage", ["truncated_json", "list_json", "missing_key", "injected_param", "injected_data",
                                    "bad_seed", "truncated_weights", "empty_weights", "missing_weights",
                                    "other_method", "not_a_folder"])
def test_item5_damaged_model_folders(tiny, knn_folder, tmp_path, damage):
    spatial, reference, _ = tiny
    src, _ = knn_folder
    path = tmp_path / "m"
    path.mkdir()
    meta_text = (src / "model.json").read_text()
    weights = (src / "state.safetensors").read_bytes()
    meta = json.loads(meta_text)
    if damage == "truncated_json":
        meta_text = meta_text[: len(meta_text) // 2]
    elif damage == "list_json":
        meta_text = "[1, 2]"
    elif damage == "missing_key":
        del meta["feature_genes"]
    elif damage == "injected_param":
        meta["config"]["architecture"]["gene_embeddings"] = "/etc/passwd"
    elif damage == "injected_data":
        meta["data"]["reference"] = "x"
    elif damage == "bad_seed":
        meta["seed"] = "0; rm"
    elif damage == "truncated_weights":
        weights = weights[: len(weights) // 2]
    elif damage == "empty_weights":
        weights = b""
    elif damage == "other_method":
        tensors = load_file(str(src / "state.safetensors"))
        save_file(tensors, str(tmp_path / "w"), metadata={"method": "stimpute", "identity": "x"})
        weights = (tmp_path / "w").read_bytes()
    if damage not in ("truncated_json", "list_json"):
        meta_text = json.dumps(meta)
    (path / "model.json").write_text(meta_text)
    if damage != "missing_weights":
        (path / "state.safetensors").write_bytes(weights)
    if damage == "not_a_folder":
        path = path / "model.json"
    with pytest.raises(SpatialImputeInputError):
        KNNImpute.load(path, spatial, reference)


def test_item5_a_folder_saved_in_an_older_layout_says_so(tiny, knn_folder, tmp_path):
    spatial, reference, _ = tiny
    src, _ = knn_folder
    path = tmp_path / "old"
    path.mkdir()
    meta = json.loads((src / "model.json").read_text())
    meta["format"] -= 1
    (path / "model.json").write_text(json.dumps(meta))
    (path / "state.safetensors").write_bytes((src / "state.safetensors").read_bytes())
    with pytest.raises(SpatialImputeInputError, match="older spatialimpute.*train the model again"):
        KNNImpute.load(path, spatial, reference)


def test_item5_huge_coordinates_are_refused(tiny):
    spatial, reference, _ = tiny
    sp = spatial.copy()
    sp.obsm["spatial"] = sp.obsm["spatial"] * 1e298
    with pytest.raises(SpatialImputeInputError, match="^`spatial`.*magnitude"):
        KNNImpute(sp, reference)


# ---------------------------------------------------------------- item 6: early and clean
def test_item6_rds_out_for_h5ad_input_is_refused_before_work(files, tmp_path, capsys, monkeypatch):
    import spatialimpute

    monkeypatch.setattr(spatialimpute, "impute", lambda *a, **k: pytest.fail("imputation ran"))
    assert _impute_cli(files / "spatial.h5ad", files / "reference.h5ad", tmp_path / "x.rds") == 2
    assert "`--out`" in capsys.readouterr().err


def test_item6_sigterm_during_write_leaves_nothing(tmp_path):
    class Writer:
        def write_h5ad(self, path, compression=None):
            path.write_bytes(b"partial")
            os.kill(os.getpid(), signal.SIGTERM)
            pytest.fail("SIGTERM did not interrupt the write")

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as info:
        write_h5ad(Writer(), tmp_path / "out.h5ad")
    assert info.value.code == 128 + signal.SIGTERM
    assert list(tmp_path.iterdir()) == [] and signal.getsignal(signal.SIGTERM) == before


# ---------------------------------------------------------------- item 7: argument names
def test_item7_missing_labels_key_names_labels_key(tiny):
    spatial, reference, _ = tiny
    with pytest.raises(SpatialImputeInputError, match="^`labels_key`"):
        prepare_pair(spatial, reference, labels_key="nope")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(SpatialImputeInputError, match="^`reference_labels_key`"):
            prepare_pair(spatial, reference, reference_labels_key="nope")


def test_anndata_reads_back_after_atomic_write(tiny, tmp_path):
    spatial, _, _ = tiny
    write_h5ad(spatial, tmp_path / "s.h5ad")
    assert anndata.read_h5ad(tmp_path / "s.h5ad").shape == spatial.shape and list(tmp_path.iterdir()) == [tmp_path / "s.h5ad"]
