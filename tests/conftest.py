"""Shared fixtures: small simulated pairs and the location of the real benchmark data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from spatialimpute import settings
from spatialimpute.datasets import simulate_pair

settings.progress = False

# Each pytest-xdist worker gets its share of the cores: oversubscribed torch threads make the
# many small training loops several times slower.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    settings.num_threads = max(1, (os.cpu_count() or 1) // _WORKERS)

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """The real benchmark pairs: $SPATIALIMPUTE_DATA_DIR or ../shared/data beside the repository."""
    return Path(os.environ.get("SPATIALIMPUTE_DATA_DIR", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def small_pair():
    """A small simulated tissue: (spatial 400 x 30 panel genes, reference 600 x 80 genes, truth)."""
    return simulate_pair(n_spatial=400, n_reference=600, n_genes=80, n_panel=30, n_cell_types=5, n_domains=3,
                         spatial_depth=300, seed=1)


@pytest.fixture
def pair(small_pair):
    """Fresh copies of the small pair, safe to modify in a test."""
    spatial, reference, truth = small_pair
    return spatial.copy(), reference.copy(), truth.copy()


@pytest.fixture(scope="session")
def data_dir():
    """Directory of the real pairs; skips the test when it is absent."""
    path = shared_data_dir()
    if not (path / "osmfish_somatosensory" / "spatial.h5ad").is_file():
        pytest.skip(f"real benchmark data not found at {path}")
    return path
