"""Shared label vocabulary and label transfer on panel genes."""

import numpy as np
import pandas as pd
import pytest

from spatialimpute.data.labels import shared_label_codes, transfer_labels


def test_subset_of_labels_keeps_reference_codes():
    """The original re-coded each file: spatial {D, B} became {0, 1}. Codes must be shared."""
    cats, ref, sp = shared_label_codes(["A", "B", "C", "D", "B"], ["D", "B", "D"])
    assert cats == ["A", "B", "C", "D"]
    assert ref.tolist() == [0, 1, 2, 3, 1]
    assert sp.tolist() == [3, 1, 3]


def test_categorical_order_and_spatial_only_labels():
    ref = pd.Categorical(["x", "y"], categories=["y", "x"])
    cats, ref_codes, sp = shared_label_codes(ref, ["x", "z"])
    assert cats == ["y", "x", "z"]
    assert ref_codes.tolist() == [1, 0] and sp.tolist() == [1, 2]
    cats, _, sp = shared_label_codes(["a", "b"])
    assert sp is None and cats == ["a", "b"]


@pytest.mark.parametrize("method", ["pearson", "knn"])
def test_transfer_recovers_planted_labels(method):
    rng = np.random.default_rng(0)
    profiles = rng.gamma(1.0, 1.0, size=(4, 30))
    ref_codes = np.repeat(np.arange(4), 50)
    ref = np.log1p(profiles[ref_codes] * rng.uniform(0.5, 1.5, size=(200, 30)))
    truth = rng.integers(0, 4, 300)
    sp = np.log1p(profiles[truth] * rng.uniform(0.5, 1.5, size=(300, 30)))
    got = transfer_labels(sp, ref, ref_codes, method=method, k=7, chunk_size=64)
    assert (got == truth).mean() > 0.95


def test_transfer_constant_cells_and_bad_inputs():
    ref = np.array([[1.0, 0.0, 2.0], [0.0, 3.0, 1.0], [1.0, 0.1, 2.0]])
    got = transfer_labels(np.zeros((2, 3)), ref, np.array([5, 1, 5]))
    assert got.tolist() == [5, 5]  # most frequent reference label
    with pytest.raises(ValueError, match="same genes"):
        transfer_labels(np.zeros((2, 4)), ref, np.array([0, 1, 0]))
    with pytest.raises(ValueError, match="reference_codes"):
        transfer_labels(np.zeros((2, 3)), ref, np.array([0, 1]))
    with pytest.raises(ValueError, match="method"):
        transfer_labels(np.zeros((2, 3)), ref, np.array([0, 1, 0]), method="svm")
