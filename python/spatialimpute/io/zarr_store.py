"""An on-disk AnnData (zarr) written block by block: the out-of-core result of an imputation.

The store is built in a hidden folder beside the final path (``.NAME.partial``), which
records the blocks already written; :meth:`BlockStore.finish` writes ``obs``, ``var``,
``obsm`` and ``uns`` and renames it onto the final path. A failed or interrupted run leaves
nothing at the final path, and its partial store lets a later run resume.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np

from .._io import jsonable, replace_path
from .._validation import SpatialImputeInputError

#: Genes per zarr chunk of ``X`` (cells per chunk = the block size): one gene's column is a
#: strip of ``n_blocks`` chunks of this width.
GENE_CHUNK = 64
_DONE = "spatialimpute_blocks_done"
_PARTIAL = "spatialimpute_partial"
DTYPES = ("float32", "float16")


def partial_path(path) -> Path:
    """The hidden temporary store beside ``path``."""
    path = Path(path)
    return path.with_name(f".{path.name}.partial")


def fingerprint(**values) -> str:
    """Digest of what a partial store holds (method, configuration, cells, genes, blocks, dtype)."""
    return hashlib.sha256(json.dumps(jsonable(values), sort_keys=True).encode()).hexdigest()


class BlockStore:
    """The partial store of one run: ``X`` (cells x genes) and the record of finished blocks.

    Instances are small and picklable (paths and shapes only): block tasks on dask workers
    write through them.

    Parameters
    ----------
    path
        Final path of the store (``.zarr``).
    shape
        ``(n_cells, n_genes)`` of ``X``.
    block_size
        Cells per block (= cells per zarr chunk, so blocks never share a chunk).
    dtype
        ``"float32"`` or ``"float16"``.
    identity
        :func:`fingerprint` of the run; a partial store with another one is not resumed.
    resume
        Keep the blocks of a partial store of the same run (otherwise start afresh).
    """

    def __init__(self, path, shape: tuple[int, int], block_size: int, dtype: str, identity: str, resume: bool,
                 layers: tuple[str, ...] = ()):
        import zarr

        self.path = Path(path)
        self.tmp = partial_path(self.path)
        self.shape = tuple(int(s) for s in shape)
        self.block_size = int(block_size)
        self.n_blocks = -(-self.shape[0] // self.block_size)
        self.layers = tuple(layers)
        if self.tmp.exists() and resume:
            root = zarr.open_group(str(self.tmp), mode="r")
            if root.attrs.get(_PARTIAL) != identity or _DONE not in root:
                raise SpatialImputeInputError(
                    "resume", f"a partial store of the same run at {str(self.tmp)!r}",
                    "a partial store of another run (other data, method, options, block size or dtype)",
                    "run again with resume=False to start afresh (the partial store is then replaced)",
                )
            return
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        self.tmp.parent.mkdir(parents=True, exist_ok=True)
        root = zarr.open_group(str(self.tmp), mode="w")
        for name in self._matrices():
            x = root.create_dataset(name, shape=self.shape,
                                    chunks=(self.block_size, min(GENE_CHUNK, max(1, self.shape[1]))), dtype=dtype)
            x.attrs.update({"encoding-type": "array", "encoding-version": "0.2.0"})
        if self.layers:
            root["layers"].attrs.update({"encoding-type": "dict", "encoding-version": "0.1.0"})
        root.create_dataset(_DONE, shape=(self.n_blocks,), chunks=(1,), dtype=bool, fill_value=False)
        root.attrs[_PARTIAL] = identity

    def done(self) -> np.ndarray:
        """Boolean mask of the blocks already written."""
        import zarr

        return zarr.open_array(str(self.tmp / _DONE), mode="r")[:]

    def _matrices(self) -> list[str]:
        """Paths of the cells x genes arrays in the store: ``X`` and ``layers/NAME``."""
        return ["X", *(f"layers/{name}" for name in self.layers)]

    def write(self, block: int, rows: dict[str, np.ndarray]) -> None:
        """Write the rows of ``block`` into ``X`` and the layers, then mark it finished."""
        import zarr

        start = block * self.block_size
        for path, name in zip(self._matrices(), ("X", *self.layers)):
            x = zarr.open_array(str(self.tmp / path), mode="r+")
            x[start:start + rows[name].shape[0]] = rows[name].astype(x.dtype, copy=False)
        zarr.open_array(str(self.tmp / _DONE), mode="r+")[block] = True

    def read_rows(self, rows: np.ndarray) -> np.ndarray:
        """Rows ``rows`` (store positions, any order, repeats allowed) of ``X`` as float32.

        Reads one block of cells at a time, so memory holds the result and one block.
        """
        import zarr

        x = zarr.open_array(str(self.tmp / "X"), mode="r")
        wanted, where = np.unique(np.asarray(rows, dtype=np.int64), return_inverse=True)
        out = np.empty((wanted.size, self.shape[1]), dtype=np.float32)
        bounds = np.searchsorted(wanted, np.arange(0, self.n_blocks + 1) * self.block_size)
        for start, stop in zip(bounds[:-1], bounds[1:]):
            if stop > start:
                out[start:stop] = x.get_orthogonal_selection((wanted[start:stop], slice(None)))
        return out[where]

    def finish(self, obs, var, obsm: dict, uns: dict) -> Path:
        """Write the annotations, drop the block record and move the store onto its final path."""
        import zarr

        if not self.done().all():
            raise RuntimeError(f"{int((~self.done()).sum())} blocks of {self.tmp} are not written")
        root = zarr.open_group(str(self.tmp), mode="r+")
        del root[_DONE]
        del root.attrs[_PARTIAL]
        for key, value in (("obs", obs), ("var", var), ("obsm", obsm), ("uns", uns), ("layers", {}),
                           ("obsp", {}), ("varm", {}), ("varp", {})):
            if not (key == "layers" and self.layers):
                _write_elem(root, key, value)
        root.attrs.update({"encoding-type": "anndata", "encoding-version": "0.1.0"})
        zarr.consolidate_metadata(str(self.tmp))
        replace_path(self.tmp, self.path)
        return self.path


def read_lazy(path):
    """Open an AnnData zarr store with ``X`` as a dask array (nothing of ``X`` read yet)."""
    import anndata
    import dask.array as da
    import zarr

    root = zarr.open_group(str(path), mode="r")
    parts = {key: _read_elem(root[key]) for key in ("obs", "var", "obsm", "uns") if key in root}
    x = root["X"]
    layers = {name: da.from_array(array, chunks=array.chunks) for name, array in root["layers"].arrays()} \
        if "layers" in root else {}
    return anndata.AnnData(X=da.from_array(x, chunks=x.chunks), layers=layers, **parts)


def _write_elem(group, key, value) -> None:
    try:
        from anndata.io import write_elem
    except ImportError:  # anndata < 0.11
        from anndata.experimental import write_elem
    write_elem(group, key, value)


def _read_elem(elem):
    try:
        from anndata.io import read_elem
    except ImportError:  # anndata < 0.11
        from anndata.experimental import read_elem
    return read_elem(elem)
