"""Property-based fuzzing of the input validator and the loaders (issue 15).

Every outcome must be a valid result or a :class:`SpatialImputeInputError`, and the inputs are
never modified. Examples are few and deadlines off, so the file runs in seconds.
"""

from __future__ import annotations

import json

import anndata
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from spatialimpute._validation import (
    SpatialImputeInputError, check_bool, check_fraction, check_int, check_number, prepare_pair,
)
from spatialimpute.data.embeddings import GeneEmbeddings, read_embedding_table
from spatialimpute.data.paired import PairedData
from spatialimpute.datasets import simulate_pair
from spatialimpute.model.knn import KNNImpute

FUZZ = settings(max_examples=40, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])
pytestmark = pytest.mark.filterwarnings("ignore")

GENES = [f"G{i}" for i in range(12)]
ANYTHING = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
                     st.text(max_size=5), st.lists(st.integers(), max_size=2), st.just(np.int64(3)),
                     st.just(np.float32(0.5)), st.just(np.bool_(True)))

#: Damage applied to an otherwise valid AnnData (0 to 2 of them per example).
MUTATIONS = ["float32", "float64", "uint8", "bool", "csr", "csc", "coo", "nan", "inf", "negative", "fraction",
             "dup_gene", "dup_cell", "lower_gene", "empty_name", "int_names", "no_coords", "coords_1d",
             "coords_3d", "coords_nan", "coords_huge", "coords_text", "zero_cell", "zero_gene", "no_genes",
             "layer", "lib_zero", "lib_nan", "labels_nan"]


def _mutate(adata, mutation: str, rng: np.random.Generator):
    """Apply one kind of damage (or a harmless variation) to a fresh AnnData."""
    X = adata.X.toarray() if sp.issparse(adata.X) else np.asarray(adata.X, dtype=np.float64)
    X = X.astype(np.float64)
    if X.size == 0:
        return adata
    i, j = rng.integers(adata.n_obs), rng.integers(adata.n_vars)
    if mutation in ("float32", "float64", "uint8", "bool"):
        adata.X = X.astype(mutation if mutation != "bool" else bool)
    elif mutation in ("csr", "csc", "coo"):
        adata.X = getattr(sp, f"{mutation}_matrix")(X) if mutation != "coo" else sp.csr_matrix(X).tocoo().tocsr()
    elif mutation in ("nan", "inf", "negative", "fraction"):
        X[i, j] = {"nan": np.nan, "inf": np.inf, "negative": -1.0, "fraction": 0.5}[mutation]
        adata.X = X
    elif mutation in ("dup_gene", "lower_gene", "empty_name", "int_names"):
        names = list(adata.var_names)
        names[j] = {"dup_gene": names[0], "lower_gene": names[j].lower(), "empty_name": "", "int_names": str(j)}[mutation]
        adata.var_names = names
    elif mutation == "dup_cell":
        adata.obs_names = [adata.obs_names[0]] * adata.n_obs
    elif mutation == "zero_cell":
        X[i] = 0
        adata.X = X
    elif mutation == "zero_gene":
        X[:, j] = 0
        adata.X = X
    elif mutation == "no_genes":
        adata = adata[:, []].copy()
    elif mutation == "layer":
        adata.layers["counts"] = X.copy()
    elif isinstance(adata.obsm.get("spatial"), np.ndarray):
        coords = adata.obsm["spatial"]
        if mutation == "no_coords":
            del adata.obsm["spatial"]
        elif mutation == "coords_1d":
            adata.obsm["spatial"] = coords[:, :1]
        elif mutation == "coords_3d":
            adata.obsm["spatial"] = np.hstack([coords, coords[:, :1]])
        elif mutation == "coords_nan":
            coords[i, 0] = np.nan
        elif mutation == "coords_huge":
            coords[i, 0] = 1e300
        elif mutation == "coords_text":
            adata.obsm["spatial"] = pd.DataFrame(coords.astype(str), index=adata.obs_names)
        elif mutation == "lib_zero":
            adata.obs["lib"] = 0.0
        elif mutation == "lib_nan":
            adata.obs.loc[adata.obs_names[i], "lib"] = np.nan
        elif mutation == "labels_nan":
            adata.obs["cell_type"] = adata.obs["cell_type"].astype(object)
            adata.obs.iloc[i, adata.obs.columns.get_loc("cell_type")] = None
    return adata


@st.composite
def anndatas(draw, min_obs: int, max_obs: int, spatial: bool):
    """A small valid AnnData of counts, then 0-2 kinds of damage."""
    n_obs = draw(st.integers(min_obs, max_obs))
    genes = draw(st.lists(st.sampled_from(GENES), min_size=2 if spatial else 8, max_size=6 if spatial else 12,
                          unique=True))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    X = rng.poisson(2.0, size=(n_obs, len(genes))).astype(np.int64)
    adata = anndata.AnnData(X=X)
    adata.var_names = genes
    adata.obs_names = [f"c{i}" for i in range(n_obs)]
    adata.obs["cell_type"] = np.array(["a", "b", "c"])[rng.integers(0, 3, n_obs)]
    if spatial:
        adata.obsm["spatial"] = rng.uniform(0, 100, size=(n_obs, 2))
        adata.obs["lib"] = X.sum(axis=1) + 10.0
    for mutation in draw(st.lists(st.sampled_from(MUTATIONS), max_size=2)):
        adata = _mutate(adata, mutation, rng)
    return adata


def _snapshot(adata) -> dict:
    X = adata.X
    return {"X": X.toarray() if sp.issparse(X) else np.array(X), "obs": adata.obs.copy(), "var": adata.var.copy(),
            "obs_names": list(adata.obs_names), "var_names": list(adata.var_names),
            "obsm": {k: np.array(v) for k, v in adata.obsm.items()}, "layers": list(adata.layers)}


def _assert_unchanged(adata, before: dict) -> None:
    after = _snapshot(adata)
    np.testing.assert_array_equal(after["X"], before["X"])
    pd.testing.assert_frame_equal(after["obs"], before["obs"])
    pd.testing.assert_frame_equal(after["var"], before["var"])
    assert after["obs_names"] == before["obs_names"] and after["var_names"] == before["var_names"]
    assert after["layers"] == before["layers"] and after["obsm"].keys() == before["obsm"].keys()
    for key, value in before["obsm"].items():
        assert pd.DataFrame(after["obsm"][key]).equals(pd.DataFrame(value))  # NaN-aware


@FUZZ
@given(spatial=anndatas(2, 12, spatial=True), reference=anndatas(10, 16, spatial=False),
       options=st.fixed_dictionaries({
           "genes": st.sampled_from([None, None, None, ["G1"], ["g1", "G2"], [], ["nope"], "G3"]),
           "library_size_key": st.sampled_from([None, None, "lib", "missing"]),
           "labels_key": st.sampled_from([None, None, "cell_type", "missing"]),
           "spatial_layer": st.sampled_from([None, None, None, None, "counts"]),
           "case_insensitive_genes": st.booleans(),
       }))
def test_prepare_pair_is_valid_or_a_clean_error(spatial, reference, options):
    before = _snapshot(spatial), _snapshot(reference)
    try:
        paired = prepare_pair(spatial, reference, **options)
    except SpatialImputeInputError as err:
        assert err.argument and err.expected and err.found and err.fix
        event(f"refused: {err.argument}: {err.expected[:50]}")
    else:
        event("valid")
        assert isinstance(paired, PairedData)
        panel = np.asarray(paired.spatial_X)
        assert np.isfinite(panel).all() and (panel >= 0).all()
        assert np.isfinite(paired.reference_X).all() and np.isfinite(paired.coords).all()
        assert paired.spatial_X.shape == (spatial.n_obs, paired.n_features)
        assert set(paired.feature_genes).isdisjoint(paired.target_genes)
    _assert_unchanged(spatial, before[0])
    _assert_unchanged(reference, before[1])


@FUZZ
@given(value=ANYTHING, minimum=st.none() | st.integers(-2, 2))
def test_parameter_helpers_return_or_refuse(value, minimum):
    for check, kwargs, kind in ((check_int, {"minimum": minimum}, int), (check_number, {"minimum": minimum}, float),
                                (check_fraction, {}, float), (check_bool, {}, bool)):
        try:
            out = check(value, "x", **kwargs)
        except SpatialImputeInputError as err:
            assert err.argument == "x"
        else:
            assert type(out) is kind
            if kind is not bool and minimum is not None and check is not check_fraction:
                assert out >= minimum


TABLE_CELLS = st.sampled_from(["1", "0.5", "-2", "3"] * 6 + ["nan", "x", "", "1e400", "Gad1", "GAD1", '"', "\x00"])


@FUZZ
@given(rows=st.lists(st.tuples(st.sampled_from(["Gad1", "GAD1", "Sst", "Vip", "", "nan", "1"]),
                                TABLE_CELLS, TABLE_CELLS).map(list)
                      | st.lists(TABLE_CELLS, min_size=1, max_size=4), max_size=5),
       sep=st.sampled_from([None, None, ";"]), suffix=st.sampled_from([".csv", ".tsv", ".csv.gz"]),
       cut=st.none() | st.none() | st.integers(0, 60))
def test_embedding_tables_read_or_refuse(tmp_path_factory, rows, sep, suffix, cut):
    import gzip

    path = tmp_path_factory.mktemp("emb") / f"t{suffix}"
    sep = sep or ("\t" if suffix == ".tsv" else ",")
    data = ("\n".join(sep.join(r) for r in [["gene", "a", "b"], *rows]) + "\n").encode()
    if suffix.endswith(".gz"):
        data = gzip.compress(data)
    path.write_bytes(data if cut is None else data[:cut])
    try:
        emb = read_embedding_table(path)
    except SpatialImputeInputError as err:
        assert "gene_embeddings" in err.argument
        event(f"refused: {err.expected[:40]}")
    else:
        event("read")
        assert isinstance(emb, GeneEmbeddings) and len(emb) > 0 and np.isfinite(emb.vectors).all()


@FUZZ
@given(genes=hnp.arrays(st.sampled_from([np.dtype("U4"), np.dtype("i4"), np.dtype("f8")]),
                        hnp.array_shapes(min_dims=0, max_dims=2, max_side=3), elements=None),
       vectors=hnp.arrays(st.sampled_from([np.dtype("f4"), np.dtype("U2"), np.dtype("i8")]),
                          hnp.array_shapes(min_dims=0, max_dims=3, max_side=3)),
       key=st.sampled_from(["embeddings", "vectors", "other"]))
def test_npz_tables_read_or_refuse(tmp_path_factory, genes, vectors, key):
    path = tmp_path_factory.mktemp("npz") / "t.npz"
    np.savez(path, genes=genes, **{key: vectors})
    try:
        emb = read_embedding_table(path)
    except SpatialImputeInputError:
        event("refused")
    else:
        event("read")
        assert len(emb) == genes.size and emb.vectors.shape[0] == genes.size


@pytest.fixture(scope="module")
def saved_knn(tmp_path_factory):
    spatial, reference, _ = simulate_pair(n_spatial=60, n_reference=80, n_genes=20, n_panel=8, n_cell_types=3,
                                          n_domains=2, spatial_depth=150, seed=5)
    path = tmp_path_factory.mktemp("knn") / "model"
    KNNImpute(spatial, reference, k=5, reliability=False, device="cpu").train().save(path)
    return path, spatial, reference


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner,
                                                                                       max_size=3), max_leaves=6)


def _shuffle_list(value):
    return value[::-1] if isinstance(value, list) else value


@FUZZ
@given(key=st.sampled_from(["format", "method", "config", "seed", "feature_genes", "target_genes", "cell_names",
                            "reference_cell_names", "data", "history", "timings", "state", "extra"]),
       sub=st.none() | st.sampled_from(["k", "weighting", "n_components", "reliability", "spatial_key", "x"]),
       value=JSON_VALUES | st.sampled_from(["reverse", "keep", 3, 5]), cut=st.none() | st.integers(0, 400))
def test_model_folders_load_or_refuse(saved_knn, tmp_path_factory, key, sub, value, cut):
    src, spatial, reference = saved_knn
    meta = json.loads((src / "model.json").read_text())
    if value in ("reverse", "keep"):
        meta[key] = _shuffle_list(meta.get(key)) if value == "reverse" else meta.get(key)
    elif sub is not None and isinstance(meta.get(key), dict):
        meta[key][sub] = value
    else:
        meta[key] = value
    path = tmp_path_factory.mktemp("folder")
    (path / "model.json").write_text(json.dumps(meta))
    weights = (src / "state.safetensors").read_bytes()
    (path / "state.safetensors").write_bytes(weights if cut is None else weights[:cut])
    before = _snapshot(spatial), _snapshot(reference)
    try:
        model = KNNImpute.load(path, spatial, reference, device="cpu")
    except SpatialImputeInputError as err:
        event(f"refused: {err.argument.split(':')[-1]}")
    else:
        event("loaded")
        out = model.impute()
        assert out.shape == (spatial.n_obs, len(meta["target_genes"])) and np.isfinite(out.X).all()
    _assert_unchanged(spatial, before[0])
    _assert_unchanged(reference, before[1])


@settings(FUZZ, max_examples=15)
@given(k=ANYTHING | st.integers(1, 200), weighting=st.sampled_from(["similarity", "uniform", "other", 3]),
       n_components=ANYTHING | st.integers(1, 40), drop=st.integers(0, 7))
def test_knn_runs_or_refuses(saved_knn, k, weighting, n_components, drop):
    _, spatial, reference = saved_knn
    sub = spatial[:, drop:].copy()
    try:
        out = KNNImpute(sub, reference, k=k, weighting=weighting, n_components=n_components, device="cpu").impute()
    except SpatialImputeInputError as err:
        event(f"refused: {err.argument}")
        return
    event("imputed")
    assert out.n_obs == sub.n_obs and np.isfinite(out.X).all()
    rel = out.var["reliability"].to_numpy()
    assert (np.isnan(rel) | ((rel >= 0) & (rel <= 1))).all()
