"""Locate and load the paired benchmark datasets (``<data_dir>/<name>/{spatial,scrna}.h5ad``)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DATA_DIR_ENV", "default_data_dir", "resolve_data_dir", "list_datasets", "dataset_paths", "load_dataset"]

#: Environment variable naming the directory that holds the paired datasets.
DATA_DIR_ENV = "SPATIALIMPUTE_DATA_DIR"
SPATIAL_FILE = "spatial.h5ad"
REFERENCE_FILE = "scrna.h5ad"

_REPO_ROOT = Path(__file__).resolve().parents[3]


def _candidates() -> list[Path]:
    return [_REPO_ROOT.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"]


def default_data_dir() -> Path | None:
    """The data directory used when none is given: ``$SPATIALIMPUTE_DATA_DIR``, else
    ``../shared/data`` relative to the repository, else relative to the working directory;
    ``None`` when none of these exists."""
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    for path in _candidates():
        if path.is_dir():
            return path
    return None


def resolve_data_dir(data_dir=None) -> Path:
    """Return the data directory to use, checking that it exists.

    Parameters
    ----------
    data_dir
        Explicit directory; default :func:`default_data_dir`.

    Raises
    ------
    FileNotFoundError
        When the directory does not exist (the message says how to point at one).
    """
    path = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    if path is None or not path.is_dir():
        tried = [str(path)] if path is not None else [str(p) for p in _candidates()]
        raise FileNotFoundError(
            f"data_dir: expected a directory holding <name>/{SPATIAL_FILE} and <name>/{REFERENCE_FILE}; "
            f"found none at {', '.join(tried)}. Fix: pass --data-dir / data_dir=, or set {DATA_DIR_ENV}."
        )
    return path


def list_datasets(data_dir=None) -> list[str]:
    """Names of the datasets in ``data_dir`` (sub-directories holding both h5ad files), sorted.

    Returns an empty list when no data directory can be found.
    """
    try:
        root = resolve_data_dir(data_dir)
    except FileNotFoundError:
        return []
    return sorted(
        p.name for p in root.iterdir()
        if p.is_dir() and (p / SPATIAL_FILE).is_file() and (p / REFERENCE_FILE).is_file()
    )


def dataset_paths(name: str, data_dir=None) -> tuple[Path, Path]:
    """Paths ``(spatial.h5ad, scrna.h5ad)`` of dataset ``name``.

    Raises
    ------
    FileNotFoundError
        For an unknown name, listing the datasets that are there.
    """
    root = resolve_data_dir(data_dir)
    spatial, reference = root / name / SPATIAL_FILE, root / name / REFERENCE_FILE
    if not (spatial.is_file() and reference.is_file()):
        available = list_datasets(root)
        raise FileNotFoundError(
            f"dataset: expected one of {available or '(none)'} in {root}; found no {name!r} "
            f"(needs {name}/{SPATIAL_FILE} and {name}/{REFERENCE_FILE}). Fix: pick a listed name, or pass "
            "--spatial/--reference files."
        )
    return spatial, reference


def load_dataset(name: str, data_dir=None):
    """Read dataset ``name`` and return ``(spatial, reference)`` AnnData objects."""
    import anndata

    spatial, reference = dataset_paths(name, data_dir)
    return anndata.read_h5ad(spatial), anndata.read_h5ad(reference)
