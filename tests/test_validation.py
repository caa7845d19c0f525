"""Every input check of prepare_pair / impute: a clear error naming the argument, and inputs untouched."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from anndata.tests.helpers import assert_equal

import spatialimpute as si
from spatialimpute._validation import SpatialImputeInputError, SpatialImputeWarning, prepare_pair
from spatialimpute.data.normalize import log_normalize
from spatialimpute.data.panel import PanelMatrix


def _error(spatial, reference, match, **kwargs):
    with pytest.raises(SpatialImputeInputError, match=match) as info:
        prepare_pair(spatial, reference, **kwargs)
    message = str(info.value)
    assert "expected" in message and "found" in message and "Fix:" in message
    return info.value


def test_paired_data_alignment(pair):
    spatial, reference, _ = pair
    p = prepare_pair(spatial, reference)
    assert p.feature_genes == list(spatial.var_names)
    assert p.target_genes == [g for g in reference.var_names if g not in set(spatial.var_names)]
    assert p.reference_X.shape == (reference.n_obs, p.n_features + p.n_targets)
    assert p.spatial_X.dtype == np.float32 and p.coords.dtype == np.float64
    assert not p.target_in_panel.any()
    expected = log_normalize(np.asarray(spatial.X))
    np.testing.assert_allclose(p.spatial_X, expected, rtol=1e-6)
    ref_cols = reference.var_names.get_indexer(p.feature_genes + p.target_genes)
    np.testing.assert_allclose(p.reference_X, log_normalize(np.asarray(reference.X))[:, ref_cols], rtol=1e-6)


def test_normalisation_convention():
    counts = np.array([[1.0, 3.0], [0.0, 0.0], [2.0, 2.0], [5.0, 5.0]])
    out = log_normalize(counts)
    median = np.median([4.0, 4.0, 10.0])  # zero-total cells are excluded from the median
    np.testing.assert_allclose(out[0], np.log1p(counts[0] / 4 * median), rtol=1e-6)
    np.testing.assert_array_equal(out[1], 0)
    np.testing.assert_allclose(out[3], np.log1p(counts[3] / 10 * median), rtol=1e-6)


def test_sparse_and_dense_inputs_agree(pair):
    spatial, reference, _ = pair
    dense = prepare_pair(spatial, reference)
    spatial.X = sp.csr_matrix(spatial.X)
    reference.X = sp.csc_matrix(reference.X)
    sparse = prepare_pair(spatial, reference)
    np.testing.assert_array_equal(dense.spatial_X, sparse.spatial_X)
    np.testing.assert_array_equal(dense.reference_X, sparse.reference_X)


def test_validation_targets_from_panel_are_held_out(pair):
    spatial, reference, _ = pair
    genes = list(spatial.var_names[:5])
    p = prepare_pair(spatial, reference, genes=genes)
    assert p.target_genes == genes and p.target_in_panel.all()
    assert not set(genes) & set(p.feature_genes)
    # the library size still counts every measured gene (normalise once, before holding out)
    np.testing.assert_allclose(p.spatial_library_size, np.asarray(spatial.X).sum(axis=1))


def test_library_size_key(pair):
    spatial, reference, _ = pair
    spatial.obs["total"] = np.asarray(spatial.X).sum(axis=1) * 2
    p = prepare_pair(spatial, reference, library_size_key="total")
    np.testing.assert_allclose(p.spatial_library_size, spatial.obs["total"])
    _error(spatial, reference, "library_size_key", library_size_key="nope")


def test_missing_coordinates(pair):
    spatial, reference, _ = pair
    del spatial.obsm["spatial"]
    _error(spatial, reference, "obsm")


def test_non_numeric_coordinates(pair):
    spatial, reference, _ = pair
    spatial.obsm["spatial"] = np.array([["a", "b"]] * spatial.n_obs)
    _error(spatial, reference, "numeric coordinates")


def test_nan_coordinates(pair):
    spatial, reference, _ = pair
    coords = spatial.obsm["spatial"].copy()
    coords[3, 0] = np.nan
    spatial.obsm["spatial"] = coords
    _error(spatial, reference, "NaN/Inf coordinates")


def test_wrong_coordinate_shape(pair):
    spatial, reference, _ = pair
    spatial.obsm["spatial"] = np.zeros((spatial.n_obs, 1))
    _error(spatial, reference, "shape")


def test_no_shared_genes(pair):
    spatial, reference, _ = pair
    reference.var_names = [f"X{g}" for g in reference.var_names]
    _error(spatial, reference, "no shared genes")


def test_no_shared_genes_hints_at_case(pair):
    spatial, reference, _ = pair
    reference.var_names = [g.upper() for g in reference.var_names]
    err = _error(spatial, reference, "no shared genes")
    assert "ignoring case" in err.fix


@pytest.mark.parametrize("axis", ["gene", "cell"])
def test_duplicated_names(pair, axis):
    spatial, reference, _ = pair
    if axis == "gene":
        names = list(spatial.var_names)
        names[1] = names[0]
        spatial.var_names = names
    else:
        names = list(spatial.obs_names)
        names[1] = names[0]
        spatial.obs_names = names
    _error(spatial, reference, f"duplicated {axis} names")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -1.0])
@pytest.mark.parametrize("which", ["spatial", "reference"])
def test_invalid_values(pair, bad, which):
    spatial, reference, _ = pair
    target = spatial if which == "spatial" else reference
    X = np.asarray(target.X, dtype=np.float32).copy()
    X[2, 3] = bad
    target.X = X
    _error(spatial, reference, "finite values" if bad != -1.0 else "non-negative")


def test_invalid_values_in_sparse_input(pair):
    spatial, reference, _ = pair
    X = sp.csr_matrix(np.asarray(reference.X, dtype=np.float32))
    X.data[0] = np.nan
    reference.X = X
    _error(spatial, reference, "NaN/Inf")


def test_non_numeric_matrix(pair):
    spatial, reference, _ = pair
    spatial.layers["text"] = np.full(spatial.shape, "x", dtype=object)
    _error(spatial, reference, "real numeric", spatial_layer="text")


def test_unknown_layer(pair):
    spatial, reference, _ = pair
    _error(spatial, reference, "reference_layer", reference_layer="counts")


def test_too_few_reference_cells(pair):
    spatial, reference, _ = pair
    _error(spatial, reference[:5].copy(), "at least 10 reference cells")


def test_requested_genes_absent_from_reference(pair):
    spatial, reference, _ = pair
    err = _error(spatial, reference, "absent", genes=["NotAGene", reference.var_names[-1]])
    assert "NotAGene" in err.found


def test_requested_genes_case_hint(pair):
    spatial, reference, _ = pair
    err = _error(spatial, reference, "absent", genes=[reference.var_names[-1].upper()])
    assert "case differs" in err.fix


def test_no_default_targets(pair):
    spatial, reference, _ = pair
    _error(spatial, reference[:, spatial.var_names].copy(), "every reference gene is already in the panel")


def test_all_panel_genes_as_targets(pair):
    spatial, reference, _ = pair
    _error(spatial, reference, "at least one panel gene", genes=list(spatial.var_names))


def test_empty_and_wrong_type_inputs(pair):
    spatial, reference, _ = pair
    _error(spatial[:0].copy(), reference, "at least one cell")
    _error(np.zeros((3, 3)), reference, "anndata.AnnData")


def test_all_zero_cells_and_genes_warn_and_are_handled(pair):
    spatial, reference, _ = pair
    X = np.asarray(spatial.X).copy()
    X[0] = 0
    X[:, 2] = 0
    spatial.X = X
    R = np.asarray(reference.X).copy()
    R[4] = 0
    target = [g for g in reference.var_names if g not in set(spatial.var_names)][0]
    R[:, reference.var_names.get_loc(target)] = 0
    reference.X = R
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        p = prepare_pair(spatial, reference)
    messages = " ".join(str(w.message) for w in caught if issubclass(w.category, SpatialImputeWarning))
    assert "spatial cells have no counts" in messages
    assert "all-zero in the spatial data or the reference" in messages
    assert "reference cells have no counts" in messages
    assert "all-zero in the reference and will be imputed as 0" in messages
    assert spatial.var_names[2] not in p.feature_genes
    assert p.n_reference == reference.n_obs - 1
    assert p.n_cells == spatial.n_obs


def test_labels_share_one_vocabulary(pair):
    spatial, reference, _ = pair
    keep = spatial.obs["cell_type"].isin(["type_3", "type_1"]).to_numpy()
    spatial = spatial[keep].copy()
    p = prepare_pair(spatial, reference, labels_key="cell_type")
    assert list(p.spatial_labels.categories) == list(p.reference_labels.categories) == sorted(reference.obs["cell_type"].unique())
    # the same label gets the same integer code in both datasets
    code = p.reference_labels.categories.get_loc("type_3")
    assert (p.spatial_labels.codes[np.asarray(spatial.obs["cell_type"] == "type_3")] == code).all()


def test_missing_label_column(pair):
    spatial, reference, _ = pair
    # Each message names the argument the user passed (issue 15, item 7).
    _error(spatial, reference, "^`labels_key`", labels_key="nope")
    _error(spatial, reference, "^`reference_labels_key`", labels_key="cell_type", reference_labels_key="nope")


def test_unknown_method_and_params(pair):
    spatial, reference, _ = pair
    with pytest.raises(SpatialImputeInputError, match="method"):
        si.impute(spatial, reference, method="magic")
    with pytest.raises(SpatialImputeInputError, match="unknown"):
        si.impute(spatial, reference, method="knn", not_a_param=3)
    with pytest.raises(SpatialImputeInputError, match="seed"):
        si.impute(spatial, reference, method="knn", seed=-1)
    with pytest.raises(SpatialImputeInputError, match="device"):
        si.impute(spatial, reference, method="knn", device="tpu")


def test_inputs_never_modified(pair):
    spatial, reference, _ = pair
    spatial.X = sp.csr_matrix(spatial.X)
    before_s, before_r = spatial.copy(), reference.copy()
    si.impute(spatial, reference, method="knn", genes=list(spatial.var_names[:3]) + [reference.var_names[-1]],
              reliability=False)
    assert_equal(spatial, before_s)
    assert_equal(reference, before_r)
    with pytest.raises(SpatialImputeInputError):
        si.impute(spatial, reference, method="knn", genes=["NotAGene"])
    assert_equal(spatial, before_s)
    assert_equal(reference, before_r)


def test_obs_dataframe_coordinates_accepted(pair):
    spatial, reference, _ = pair
    spatial.obsm["spatial"] = pd.DataFrame(spatial.obsm["spatial"], index=spatial.obs_names, columns=["x", "y"])
    p = prepare_pair(spatial, reference)
    np.testing.assert_array_equal(p.coords, spatial.obsm["spatial"].to_numpy())


@pytest.mark.parametrize("value", [0, -1, "abc", "10", 2.5, 2.0, True, None, float("nan")])
def test_check_int_refuses(value):
    from spatialimpute._validation import check_int

    with pytest.raises(SpatialImputeInputError, match="`k`: expected an integer >= 1"):
        check_int(value, "k", minimum=1)


def test_parameter_helpers_accept_numpy_and_bounds():
    from spatialimpute._validation import check_bool, check_fraction, check_int, check_number

    assert check_int(np.int32(5), "k", minimum=1, maximum=5) == 5 and type(check_int(np.int64(2), "k")) is int
    assert check_number(np.float32(0.5), "x", minimum=0, inclusive=False) == 0.5
    assert check_number(3, "x") == 3.0 and check_fraction(1, "f") == 1.0 and check_fraction(0.0, "f") == 0.0
    assert check_bool(np.bool_(True), "b") is True
    for bad in (0.0, float("inf"), "1", True):
        with pytest.raises(SpatialImputeInputError, match="`x`"):
            check_number(bad, "x", minimum=0, inclusive=False)
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(SpatialImputeInputError, match="`f`"):
            check_fraction(bad, "f")
    for bad in (0, 1, "true", None):
        with pytest.raises(SpatialImputeInputError, match="`b`"):
            check_bool(bad, "b")
    with pytest.raises(SpatialImputeInputError, match="`method`"):
        si._validation.check_choice(["knn"], "method", {"knn"})


def test_counts_are_kept_only_when_asked_and_the_inputs_stay_untouched(pair):
    spatial, reference, _ = pair
    for adata in (spatial, reference):  # dense float32: the copies normalised in place must be copies
        adata.X = np.asarray(adata.X.toarray() if sp.issparse(adata.X) else adata.X, dtype=np.float32)
    before = spatial.X.copy(), reference.X.copy()
    with_counts = prepare_pair(spatial, reference)
    without = prepare_pair(spatial, reference, keep_counts=False)
    assert without.spatial_counts is None and without.reference_counts is None
    assert with_counts.spatial_counts is not None and with_counts.reference_counts is not None
    np.testing.assert_array_equal(without.spatial_X, with_counts.spatial_X)
    np.testing.assert_array_equal(without.reference_X, with_counts.reference_X)
    held = without.hold_out_features(np.array([0, 1])).subset_cells(np.arange(5))
    assert held.spatial_counts is None and held.spatial_X.shape == (5, without.n_features - 2)
    np.testing.assert_array_equal(spatial.X, before[0])
    np.testing.assert_array_equal(reference.X, before[1])


@pytest.mark.parametrize("layout", ["dense", "csr", "csc"])
def test_reference_counts_are_read_on_demand_and_folds_get_a_compact_copy(pair, layout):
    """The reference's counts (methods that read counts) are the input's values of the kept
    cells and the paired genes, read from the input, not a second copy of the reference; a
    fold of the inner cross-validation holds only its own columns."""
    spatial, reference, _ = pair
    dense = np.asarray(reference.X.toarray() if sp.issparse(reference.X) else reference.X, dtype=np.float32)
    dense[3] = 0.0  # a cell without counts is dropped
    reference.X = {"dense": dense, "csr": sp.csr_matrix(dense), "csc": sp.csc_matrix(dense)}[layout]
    with pytest.warns(SpatialImputeWarning, match="no counts"):
        p = prepare_pair(spatial, reference)
    columns = reference.var_names.get_indexer(p.feature_genes + p.target_genes)
    expected = dense[np.flatnonzero(dense.sum(axis=1) > 0)][:, columns]
    assert isinstance(p.reference_counts, PanelMatrix) and p.reference_counts.shape == expected.shape
    np.testing.assert_array_equal(np.asarray(p.reference_counts), expected)
    np.testing.assert_array_equal(p.reference_counts[np.array([9, 2])], expected[[9, 2]])
    fold = p.hold_out_features(np.array([4, 1]))
    order = np.concatenate([np.setdiff1d(np.arange(p.n_features), [1, 4]), [1, 4]])
    np.testing.assert_array_equal(np.asarray(fold.reference_counts), expected[:, order])
    assert fold.reference_counts._matrix.shape == (expected.shape[0], p.n_features)  # not the whole reference
    np.testing.assert_array_equal(dense, np.asarray(reference.X.toarray() if sp.issparse(reference.X) else reference.X))


@pytest.mark.parametrize("layout", ["dense", "csr", "csc"])
def test_spatial_panel_is_read_on_demand_with_the_same_values(pair, layout):
    """The panel is normalised when read: every way of reading it, after cell and gene
    subsets, gives the values of the dense normalised copy, and writing into what was read
    changes neither the caller's matrix nor the next read."""
    spatial, reference, _ = pair
    dense = np.asarray(spatial.X, dtype=np.float32)
    spatial.X = {"dense": dense, "csr": sp.csr_matrix(dense), "csc": sp.csc_matrix(dense)}[layout]
    before = dense.copy()
    p = prepare_pair(spatial, reference)
    columns = spatial.var_names.get_indexer(p.feature_genes)
    expected = log_normalize(dense)[:, columns]
    np.testing.assert_array_equal(np.asarray(p.spatial_X), expected)
    np.testing.assert_array_equal(np.asarray(p.spatial_counts), dense[:, columns])
    cells, genes = np.array([7, 3, 3, 120]), np.array([5, 0])
    view = p.subset_cells(cells).hold_out_features(genes)
    kept = np.setdiff1d(np.arange(p.n_features), genes)
    sub = expected[np.ix_(cells, kept)]
    assert view.spatial_X.shape == sub.shape
    np.testing.assert_array_equal(view.spatial_X[np.array([2, 0])], sub[[2, 0]])
    np.testing.assert_array_equal(view.spatial_X[1:3, np.array([4, 1])], sub[1:3][:, [4, 1]])
    np.testing.assert_array_equal(view.spatial_X[np.ix_([3, 1], [0, 2])], sub[np.ix_([3, 1], [0, 2])])
    np.testing.assert_array_equal(view.spatial_X[np.array([True, False, False, True])], sub[[0, 3]])
    read = view.spatial_X[np.arange(4)]
    read[:] = -1.0
    np.testing.assert_array_equal(view.spatial_X[np.arange(4)], sub)
    np.testing.assert_array_equal(dense, before)
    with pytest.raises(IndexError):
        view.spatial_X[np.array([4])]
