"""Base class of every imputation model: validation, training bookkeeping, results, save/load."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .._version import __version__
from .._io import atomic_path, jsonable
from .._settings import apply_num_threads, resolve_device, seed_everything
from .._validation import (
    SpatialImputeInputError, check_anndata, check_bool, check_choice, check_int, prepare_pair,
)
from ..data.paired import PairedData
from ._config import CONFIG_VERSION, Config, split_options

_STATE_FILE = "state.safetensors"
_META_FILE = "model.json"
#: Version of the saved-folder layout; :meth:`BaseImputer.load` reads only this one.
_FORMAT = 3
#: Tensors the base class saves beside the method's state, to recognise the training data.
_DATA_PREFIX = "_spatialimpute."
#: ``prepare_pair`` options a saved model may carry, with the types each accepts.
_DATA_KWARGS = {
    "spatial_layer": (str, type(None)), "reference_layer": (str, type(None)), "spatial_key": (str,),
    "labels_key": (str, type(None)), "reference_labels_key": (str, type(None)),
    "library_size_key": (str, type(None)), "sample_key": (str, type(None)),
    "case_insensitive_genes": (bool,),
}


class PredictionRows:
    """The prediction of the target genes, computed (or read) on demand for some cells.

    What :meth:`BaseImputer._reliability` receives: ``prediction(cells)`` returns the rows
    of the spatial cells ``cells`` (indices in the model's order), ``shape`` is
    ``(n_cells, n_targets)``; never the whole matrix at once.
    """

    def __init__(self, shape: tuple[int, int], rows):
        self.shape = shape
        self._rows = rows

    def __call__(self, cells: np.ndarray) -> np.ndarray:
        return self._rows(np.asarray(cells, dtype=np.int64))


class BaseImputer:
    """Common machinery of the imputation models (scvi-tools style model class).

    Subclasses set :attr:`method_name`, describe their options with two frozen configs
    (:attr:`Architecture`, fixed at construction, and :attr:`Schedule`, which :meth:`train`
    also accepts; see :mod:`spatialimpute.model._config`) and their :attr:`presets`, and
    implement :meth:`_fit`, :meth:`_predict_block` (or :meth:`_predict`, which is not
    memory-bounded) and :meth:`_reliability` (and :meth:`_state_dict` /
    :meth:`_load_state_dict` to be saved). Training runs once; :meth:`impute` predicts
    blocks of cells as dask tasks (:mod:`spatialimpute.model._blocks`).

    Parameters
    ----------
    spatial
        AnnData of spatial cells x panel genes (raw counts, coordinates in ``obsm``).
    reference
        AnnData of scRNA-seq reference cells x genes (raw counts).
    genes
        Genes to impute; ``None`` = every reference gene the panel lacks. Panel genes listed
        here are held out of the model's input (validation).
    seed
        Seed for everything random.
    device
        ``"auto"`` (GPU when present), ``"cpu"`` or ``"cuda[:N]"``.
    spatial_layer, reference_layer, spatial_key, labels_key, reference_labels_key, library_size_key, sample_key, case_insensitive_genes
        Where to find counts, coordinates, labels and library sizes, and how gene names
        match; see :func:`spatialimpute._validation.prepare_pair`.
    num_threads
        CPU threads for torch (default: torch's own choice).
    preset
        Name of a set of option values in :attr:`presets` (``None``: the first one).
    **options
        Options of the method's :attr:`Architecture` or :attr:`Schedule`, overriding the preset.
    """

    method_name: str = ""
    #: The model's structure (fixed when it is built).
    Architecture: type[Config] = Config
    #: How it is trained (:meth:`train` accepts overrides).
    Schedule: type[Config] = Config
    #: Preset name -> option values (of either config) that differ from the dataclass defaults;
    #: the first preset is the default.
    presets: dict[str, dict] = {"default": {}}
    #: Whether the method reads raw counts besides the log-normalised values (memory: a copy
    #: of the spatial and reference matrices is kept only for such methods).
    reads_counts: bool = False

    def __init__(self, spatial, reference, genes=None, *, seed: int = 0, device="auto", spatial_layer=None,
                 reference_layer=None, spatial_key: str = "spatial", labels_key=None, reference_labels_key=None,
                 library_size_key=None, sample_key=None, case_insensitive_genes: bool = False,
                 num_threads: int | None = None, preset: str | None = None,
                 **options):
        data_kwargs = dict(
            spatial_layer=spatial_layer, reference_layer=reference_layer, spatial_key=spatial_key,
            labels_key=labels_key, reference_labels_key=reference_labels_key, library_size_key=library_size_key,
            sample_key=sample_key, case_insensitive_genes=case_insensitive_genes,
        )
        self._configure(seed, device, num_threads, preset, options, data_kwargs)
        self.paired = prepare_pair(spatial, reference, genes, keep_counts=self._uses_counts(), **self.data_kwargs)
        self._spatial_obs = spatial.obs.copy()
        self._reference_names = [str(name) for name in reference.obs_names]

    @classmethod
    def from_paired(cls, paired: PairedData, *, seed: int = 0, device="auto", num_threads: int | None = None,
                    preset: str | None = None, **options):
        """A model of data already aligned by :func:`~spatialimpute._validation.prepare_pair`.

        What an ensemble uses to train its members on the folds of its inner
        cross-validation (:meth:`PairedData.hold_out_features`) without re-reading AnnData.
        """
        model = cls.__new__(cls)
        model._configure(seed, device, num_threads, preset, options, {
            "spatial_layer": None, "reference_layer": None, "spatial_key": "spatial", "labels_key": None,
            "reference_labels_key": None, "library_size_key": None, "sample_key": None,
            "case_insensitive_genes": False})
        model.paired = paired
        model._spatial_obs = pd.DataFrame(index=paired.cell_names)
        model._reference_names = [str(i) for i in range(paired.n_reference)]
        return model

    def _configure(self, seed, device, num_threads, preset, options: dict, data_kwargs: dict) -> None:
        """Check the settings, resolve the preset and options into the two configs, start untrained."""
        self.seed = check_int(seed, "seed", minimum=0)
        self.device = resolve_device(device)
        self.num_threads = None if num_threads is None else check_int(num_threads, "num_threads", minimum=1)
        self.data_kwargs = data_kwargs
        self.preset = check_choice(next(iter(self.presets)) if preset is None else preset, "preset", list(self.presets))
        arch_options, schedule_options = split_options(options, (self.Architecture, self.Schedule), self.method_name)
        self.architecture = self.Architecture.from_options(self.presets[self.preset], arch_options)
        self.schedule = self.Schedule.from_options(self.presets[self.preset], schedule_options)
        self._output_order: np.ndarray | None = None  # rows of a loaded model's results, in the caller's order
        self.history: dict[str, list[float]] = {}
        self.timings: dict[str, float] = {}
        self.is_trained = False
        self._cache: dict = {}  # prediction state derived from the trained model (not saved, not sent to workers)

    # ----------------------------------------------------------------- subclass API
    def _uses_counts(self) -> bool:
        """Whether the model reads raw counts (``paired.spatial_counts``); others are given ``None``."""
        return self.reads_counts

    def _fit(self) -> None:
        raise NotImplementedError

    def _predict(self) -> np.ndarray:
        """All cells at once, ``(n_cells, n_targets)``: for methods without :meth:`_predict_block`."""
        raise NotImplementedError

    def _predict_block(self, cells: np.ndarray, stats):
        """Rows of the target genes for the spatial cells ``cells`` (indices, model order).

        Returns an array, or for a model with :meth:`_output_layers` a dict with ``"X"`` and
        one array of the same shape per layer.

        ``stats`` is what :meth:`_merge_scans` made of the blocks' :meth:`_scan_block`
        (``None`` for methods without global statistics). The default predicts all cells at
        once with :meth:`_predict` (once per process) and slices it: correct, but **not
        memory-bounded**; methods override it to predict only ``cells``.
        """
        with self._cache.setdefault("lock", threading.Lock()):
            if "whole" not in self._cache:
                self._cache["whole"] = np.asarray(self._predict(), dtype=np.float32)
        return self._cache["whole"][cells]

    def _output_layers(self) -> tuple[str, ...]:
        """Names of the per-cell, per-gene layers :meth:`_predict_block` returns beside ``X`` (default none)."""
        return ()

    def _scan_block(self, cells: np.ndarray):
        """Partial global statistics of a block that every block's prediction needs (default: none)."""
        return None

    def _scan_cells(self, order: np.ndarray, block_size: int) -> np.ndarray:
        """The cells whose :meth:`_scan_block` results make the statistics, in output ``order`` (default: all)."""
        return order

    def _merge_scans(self, parts: list):
        """Combine the blocks' :meth:`_scan_block` results into the ``stats`` of :meth:`_predict_block`."""
        return None

    def _reliability(self, prediction: PredictionRows):
        """Reliability per target gene, ``(n_targets,)`` in [0, 1]; ``prediction(cells)`` gives rows on demand.

        May return a dict of per-gene columns for ``var`` instead, with ``"reliability"`` among them.
        """
        raise NotImplementedError

    def _state_dict(self) -> dict:
        """Trained state: tensors/arrays go to safetensors, everything else must be JSON."""
        return {}

    def _load_state_dict(self, state: dict) -> None:
        if state:
            raise NotImplementedError(f"{type(self).__name__} cannot restore a saved state")

    # ----------------------------------------------------------------- helpers
    def config(self) -> dict:
        """The preset and the current values of both configs (resolved ones after training)."""
        return {"version": CONFIG_VERSION, "preset": self.preset, "architecture": self.architecture.to_dict(),
                "schedule": self.schedule.to_dict()}

    def log(self, name: str, value: float) -> None:
        """Append ``value`` to the loss/metric history ``name``."""
        self.history.setdefault(name, []).append(float(value))

    # ----------------------------------------------------------------- public API
    def train(self, **schedule):
        """Fit the model to the paired data; ``schedule`` overrides :attr:`Schedule` options. Returns ``self``."""
        if schedule:
            self.schedule = self.schedule.replace(**schedule)
        apply_num_threads(self.num_threads)
        seed_everything(self.seed)
        self._cache = {}
        start = time.perf_counter()
        self._fit()
        self.timings["train_s"] = time.perf_counter() - start
        self.is_trained = True
        return self

    def impute(self, out=None, *, block_size: int | None = None, scheduler=None, dtype: str = "float32",
               resume: bool = False):
        """Impute the target genes for every spatial cell (training first if needed), block by block.

        Parameters
        ----------
        out
            ``None``: return the result in memory. A path (``.zarr``): write it block by block
            into an on-disk AnnData zarr store (``X`` chunked by cells and genes), built in a
            hidden ``.NAME.partial`` folder beside the path and renamed onto it at the end (a
            failure leaves nothing at ``out``), and return it with ``X`` as a dask array.
        block_size
            Cells per block (default: about 16 million output values a block). Prediction
            memory is bounded by a block for methods with a block path (all but STGNET
            with stage 5 or batch-statistics BatchNorm, which predicts all cells at once).
        scheduler
            Dask scheduler running the blocks: ``None``/``"threads"`` (local threads sized to
            the machine), ``"synchronous"``, a ``distributed.Client`` or a scheduler address;
            the model is sent to a cluster's workers once.
        dtype
            ``"float32"`` or ``"float16"`` (half the storage; values rounded to 3 digits).
        resume
            With ``out``: keep the blocks a failed or interrupted run of the same model and
            options already wrote to the partial store, and compute only the others.

        Returns
        -------
        anndata.AnnData
            obs = spatial cells (same order), var = target genes with ``var["reliability"]``
            and ``var["in_panel"]``, X = imputed log-normalised expression,
            ``obsm["spatial"]`` = coordinates, ``uns["spatialimpute"]`` = provenance.
        """
        import anndata

        from ..io.zarr_store import DTYPES, BlockStore, fingerprint, read_lazy
        from ._blocks import BlockRunner, default_block_size

        if not self.is_trained:
            self.train()
        dtype = check_choice(dtype, "dtype", list(DTYPES))
        n, g = self.paired.n_cells, self.paired.n_targets
        block_size = default_block_size(n, g) if block_size is None else check_int(block_size, "block_size", minimum=1)
        resume = check_bool(resume, "resume")
        if out is not None and Path(out).suffix.lower() != ".zarr":
            raise SpatialImputeInputError("out", "None or a path ending in .zarr", repr(str(out)),
                                          "e.g. out='imputed.zarr' (write .h5ad files from the returned AnnData)")
        apply_num_threads(self.num_threads)
        order = np.arange(n) if self._output_order is None else self._output_order
        blocks = [order[s:s + block_size] for s in range(0, n, block_size)]
        self._check_blocks(blocks)
        rows_of = np.empty(n, dtype=np.int64)  # output row of each cell (model order)
        rows_of[order] = np.arange(n)
        start = time.perf_counter()
        with BlockRunner(self, scheduler) as runner:
            stats = None
            if self._has_scan():  # statistics cached per set of scanned cells
                scanned = self._scan_cells(order, block_size)
                key = ("stats", hashlib.sha1(np.sort(scanned).tobytes()).hexdigest())
                if key not in self._cache:
                    self._cache[key] = self._merge_scans(runner.scan(
                        [scanned[s:s + block_size] for s in range(0, len(scanned), block_size)]))
                stats = self._cache[key]
            if out is None:
                matrices = {name: np.empty((n, g), dtype=dtype) for name in ("X", *self._output_layers())}
                for i, rows in runner.predict(blocks, list(range(len(blocks))), stats, None):
                    for name, values in rows.items():
                        matrices[name][i * block_size:i * block_size + values.shape[0]] = values
                X = matrices.pop("X")
                prediction = PredictionRows((n, g), lambda cells: X[rows_of[cells]].astype(np.float32))
            else:
                cells = [str(c) for c in self.paired.cell_names[order]]
                identity = fingerprint(method=self.method_name, version=__version__, config=self.config(),
                                       seed=self.seed, features=self.paired.feature_genes,
                                       targets=self.paired.target_genes, cells=cells, block_size=block_size,
                                       dtype=dtype, device=str(self.device))
                store = BlockStore(out, (n, g), block_size, dtype, identity, resume, layers=self._output_layers())
                todo = np.flatnonzero(~store.done()).tolist()
                for _ in runner.predict(blocks, todo, stats, store):
                    pass
                prediction = PredictionRows((n, g), lambda cells: store.read_rows(rows_of[cells]))
            scheduler_name = runner.scheduler
        self.timings["predict_s"] = time.perf_counter() - start
        start = time.perf_counter()
        with torch.no_grad():
            columns = self._reliability(prediction)
        columns = dict(columns) if isinstance(columns, dict) else {"reliability": columns}
        columns["reliability"] = np.clip(np.asarray(columns["reliability"], dtype=np.float64), 0.0, 1.0)
        self.timings["reliability_s"] = time.perf_counter() - start
        var = pd.DataFrame(
            {"reliability": columns.pop("reliability"), "in_panel": self.paired.target_in_panel,
             **{k: np.asarray(v, dtype=np.float64) for k, v in columns.items()}},
            index=pd.Index(self.paired.target_genes, name=None),
        )
        obs = self._spatial_obs.copy()
        obs.index = self.paired.cell_names
        obs = obs.iloc[order]
        obsm = {"spatial": self.paired.coords[order]}
        uns = {"spatialimpute": self.provenance()}
        uns["spatialimpute"]["prediction"] = {"block_size": block_size, "n_blocks": len(blocks),
                                              "scheduler": scheduler_name, "dtype": dtype}
        if out is None:
            return anndata.AnnData(X=X, obs=obs, var=var, obsm=obsm, uns=uns, layers=matrices)
        store.finish(obs, var, obsm, uns)
        return read_lazy(out)

    def _check_blocks(self, blocks: list[np.ndarray]) -> None:
        """Checks of the blocks that run in the calling process before any block is dispatched
        (none here; a method whose blocks depend on the cell order warns here)."""

    def _has_scan(self) -> bool:
        return type(self)._scan_block is not BaseImputer._scan_block

    def _block_rows(self, cells: np.ndarray, stats) -> dict[str, np.ndarray]:
        """:meth:`_predict_block` as a dict of float32 matrices (``"X"`` and the layers), shapes checked."""
        rows = self._predict_block(cells, stats)
        rows = dict(rows) if isinstance(rows, dict) else {"X": rows}
        expected = (len(cells), self.paired.n_targets)
        if set(rows) != {"X", *self._output_layers()}:
            raise RuntimeError(f"{type(self).__name__}._predict_block returned {sorted(rows)}, "
                               f"expected X and the layers {list(self._output_layers())}")
        for name, values in rows.items():
            rows[name] = np.asarray(values, dtype=np.float32)
            if rows[name].shape != expected:
                raise RuntimeError(f"{type(self).__name__}._predict_block returned shape {rows[name].shape} "
                                   f"for {name}, expected {expected}")
        return rows

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_cache"] = {}
        return state

    def __dask_tokenize__(self):
        return type(self).__name__, id(self)

    def provenance(self) -> dict:
        """What was run, how and how long: stored in ``uns["spatialimpute"]`` of results."""
        device_name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"
        return {
            "method": self.method_name,
            "version": __version__,
            "config": self.config(),
            "seed": self.seed,
            "device": str(self.device),
            "device_name": device_name,
            "torch_threads": torch.get_num_threads(),
            "feature_genes": list(self.paired.feature_genes),
            "n_targets": self.paired.n_targets,
            "normalization": jsonable(self.paired.normalization),
            "data": jsonable(self.data_kwargs),
            "timings": dict(self.timings),
        }

    def save(self, path) -> None:
        """Save the trained model to directory ``path`` (safetensors + JSON, atomic).

        Besides the method's state the folder records the names of the spatial and reference
        cells, the feature and target genes, and the coordinates and library sizes of the
        training cells, so that :meth:`load` can follow names and refuse other data.
        """
        from safetensors.torch import save_file

        if not self.is_trained:
            raise RuntimeError("train() the model before saving it")
        state = self._state_dict()
        tensors = {k: _to_tensor(v) for k, v in state.items() if isinstance(v, (torch.Tensor, np.ndarray))}
        tensors.update({_DATA_PREFIX + k: _to_tensor(v) for k, v in self._data_fingerprint().items()})
        extra = {k: v for k, v in state.items() if k not in tensors}
        meta = {
            "format": _FORMAT,
            "method": self.method_name,
            "version": __version__,
            "config": self.config(),
            "seed": self.seed,
            "feature_genes": list(self.paired.feature_genes),
            "target_genes": list(self.paired.target_genes),
            "cell_names": [str(c) for c in self.paired.cell_names],
            "reference_cell_names": list(self._reference_names),
            "data": jsonable(self.data_kwargs),
            "history": self.history,
            "timings": self.timings,
            "state": jsonable(extra),
        }
        with atomic_path(path) as tmp:
            tmp.mkdir()
            save_file(tensors, str(tmp / _STATE_FILE), metadata={"method": self.method_name, "identity": _identity(meta)})
            (tmp / _META_FILE).write_text(json.dumps(meta, indent=1))

    def _data_fingerprint(self) -> dict[str, np.ndarray]:
        p = self.paired
        return {"coords": p.coords, "spatial_library_size": p.spatial_library_size,
                "reference_library_size": p.reference_library_size, "sample_ids": p.sample_ids}

    @classmethod
    def load(cls, path, spatial, reference, *, device="auto", num_threads: int | None = None):
        """Load a model saved with :meth:`save` and bind it to ``spatial`` and ``reference``.

        The model keeps per-cell state, so ``spatial`` and ``reference`` must hold the cells
        it was trained on (matched by name, in any order) with the same coordinates and
        counts, and the panel genes it used (in any column order). Results follow the
        caller's cell order. The folder is checked like user input: a damaged, edited or
        mixed folder raises :class:`~spatialimpute.SpatialImputeInputError`.
        """
        path = Path(path)
        meta = _read_meta(path, cls)
        tensors = _read_tensors(path, meta)
        check_anndata(spatial, "spatial")
        check_anndata(reference, "reference")
        spatial_rows = _rows_by_name(spatial, meta["cell_names"], "spatial")
        reference_rows = _rows_by_name(reference, meta["reference_cell_names"], "reference")
        same = np.array_equal(spatial_rows, np.arange(spatial.n_obs))
        model = cls(
            spatial if same else spatial[spatial_rows],
            reference if np.array_equal(reference_rows, np.arange(reference.n_obs)) else reference[reference_rows],
            genes=meta["target_genes"], seed=meta["seed"], device=device, num_threads=num_threads,
            preset=meta["config"]["preset"], **meta["data"],
        )
        # The values the model was trained with, not the loading library's defaults.
        model.architecture = cls.Architecture.from_dict(meta["config"]["architecture"], f"{path}: architecture")
        model.schedule = cls.Schedule.from_dict(meta["config"]["schedule"], f"{path}: schedule")
        model._check_same_data(meta, {k[len(_DATA_PREFIX):]: tensors.pop(k) for k in list(tensors)
                                      if k.startswith(_DATA_PREFIX)})
        state = {k: v.to(model.device) for k, v in tensors.items()}
        state.update(meta["state"])
        try:
            model._load_state_dict(state)
        except SpatialImputeInputError:
            raise
        except (KeyError, IndexError, RuntimeError, TypeError, ValueError, AttributeError) as err:
            raise SpatialImputeInputError(
                str(path), f"the state of a saved {cls.method_name!r} model", f"{type(err).__name__}: {err}",
                "the folder is damaged or was edited: save the model again",
            ) from err
        model.history = meta["history"]
        model.timings = meta["timings"]
        model.is_trained = True
        if not same:
            model._output_order = pd.Index(meta["cell_names"]).get_indexer(spatial.obs_names.astype(str))
        return model

    def _check_same_data(self, meta: dict, saved: dict) -> None:
        """Refuse data that differs from the training data in genes, coordinates or counts."""
        have, want = set(self.paired.feature_genes), set(meta["feature_genes"])
        if have != want:
            raise SpatialImputeInputError(
                "spatial", "the panel genes the model was trained on",
                f"missing {sorted(want - have)[:5]}, extra {sorted(have - want)[:5]}",
                "pass the spatial data the model was trained with",
            )
        if self.paired.feature_genes != meta["feature_genes"]:  # same genes, other column order
            self.paired = self.paired.with_feature_order(meta["feature_genes"])
        for key, now in self._data_fingerprint().items():
            before = saved.get(key)
            if before is None or tuple(before.shape) != now.shape or not np.allclose(
                    before.numpy(), now, rtol=1e-6, atol=1e-9 * max(1.0, float(np.abs(now).max(initial=0)))):
                argument = "reference" if key.startswith("reference") else "spatial"
                raise SpatialImputeInputError(
                    argument, f"the {key.replace('_', ' ')} of the cells the model was trained on",
                    "different values for the same cell names",
                    "a saved model imputes only its training data: train a new model for new data",
                )

    def __repr__(self) -> str:
        p = self.paired
        status = "trained" if self.is_trained else "untrained"
        return (f"{type(self).__name__}({status}; {p.n_cells} spatial cells x {p.n_features} panel genes, "
                f"{p.n_reference} reference cells, {p.n_targets} target genes, device={self.device})")


def _to_tensor(value) -> torch.Tensor:
    tensor = torch.as_tensor(value) if isinstance(value, np.ndarray) else value
    return tensor.detach().cpu().contiguous()



def _identity(meta: dict) -> str:
    """Digest of what a saved folder's weights belong to (method, genes and cells)."""
    keys = ("method", "feature_genes", "target_genes", "cell_names", "reference_cell_names")
    return hashlib.sha256(json.dumps([meta[k] for k in keys]).encode()).hexdigest()


def _is_str_list(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


_META_CHECKS = {
    "format": (lambda v: v == _FORMAT, f"{_FORMAT} (the layout this version reads)"),
    "method": (lambda v: isinstance(v, str), "a method name"),
    "version": (lambda v: isinstance(v, str), "a version string"),
    "config": (lambda v: isinstance(v, dict) and set(v) == {"version", "preset", "architecture", "schedule"}
               and v["version"] == CONFIG_VERSION and isinstance(v["preset"], str),
               f"an object with the configuration (version {CONFIG_VERSION}, preset, architecture, schedule)"),
    "seed": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "a non-negative integer"),
    "feature_genes": (lambda v: _is_str_list(v) and len(v) > 0, "a non-empty list of gene names"),
    "target_genes": (lambda v: _is_str_list(v) and len(v) > 0, "a non-empty list of gene names"),
    "cell_names": (lambda v: _is_str_list(v) and len(v) > 0, "a non-empty list of cell names"),
    "reference_cell_names": (lambda v: _is_str_list(v) and len(v) > 0, "a non-empty list of cell names"),
    "data": (lambda v: isinstance(v, dict) and set(v) == set(_DATA_KWARGS)
             and all(isinstance(v[k], t) for k, t in _DATA_KWARGS.items()),
             f"an object with exactly the keys {sorted(_DATA_KWARGS)}"),
    "history": (lambda v: isinstance(v, dict) and all(isinstance(x, list) for x in v.values()), "an object of lists"),
    "timings": (lambda v: isinstance(v, dict), "an object"),
    "state": (lambda v: isinstance(v, dict), "an object"),
}


def _read_meta(path: Path, cls) -> dict:
    """Read and check ``model.json`` of a saved folder like user input."""
    where = str(path / _META_FILE)
    if not (path / _META_FILE).is_file():
        raise SpatialImputeInputError("path", f"a directory written by {cls.__name__}.save()",
                                      f"{str(path)!r} ({'no ' + _META_FILE if path.is_dir() else 'not a directory'})",
                                      "check the path")
    try:
        meta = json.loads((path / _META_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise SpatialImputeInputError(where, "a readable JSON file", f"{type(err).__name__}: {err}",
                                      "the folder is damaged: save the model again") from err
    if not isinstance(meta, dict):
        raise SpatialImputeInputError(where, "a JSON object", type(meta).__name__, "the folder is damaged: save the model again")
    if isinstance(meta.get("format"), int) and not isinstance(meta["format"], bool) and meta["format"] < _FORMAT:
        raise SpatialImputeInputError(f"{where}: format", f"{_FORMAT} (the layout this version reads)", str(meta["format"]),
                                      "the model was saved by an older spatialimpute, whose saved state this version "
                                      "does not read: train the model again and save it")
    missing = sorted(set(_META_CHECKS) - set(meta))
    unknown = sorted(set(meta) - set(_META_CHECKS))
    if missing or unknown:
        raise SpatialImputeInputError(where, f"exactly the keys {sorted(_META_CHECKS)}",
                                      f"missing {missing}, unknown {unknown}",
                                      "save the model again with this version of spatialimpute")
    for key, (ok, expected) in _META_CHECKS.items():
        if not ok(meta[key]):
            raise SpatialImputeInputError(f"{where}: {key}", expected, repr(meta[key])[:80],
                                          "the folder is damaged or was edited: save the model again")
    if meta["method"] != cls.method_name:
        raise SpatialImputeInputError(
            "path", f"a saved {cls.method_name!r} model", f"a {meta['method']!r} model", f"load it with the {meta['method']} class",
        )
    if meta["config"]["preset"] not in cls.presets:
        raise SpatialImputeInputError(f"{where}: config.preset", f"one of {list(cls.presets)}",
                                      repr(meta["config"]["preset"]), "the folder was edited: save the model again")
    return meta


def _read_tensors(path: Path, meta: dict) -> dict[str, torch.Tensor]:
    """Read ``state.safetensors`` and check that it belongs to ``meta``."""
    from safetensors import safe_open

    where = str(path / _STATE_FILE)
    try:
        with safe_open(where, framework="pt") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:  # safetensors raises its own error types, OSError and others on damage
        raise SpatialImputeInputError(where, "the weights file of a saved model", f"{type(err).__name__}: {err}",
                                      "the folder is damaged: save the model again") from err
    if header.get("method") != meta["method"] or header.get("identity") != _identity(meta):
        raise SpatialImputeInputError(
            where, f"the weights saved with {_META_FILE} (method {meta['method']!r}, same genes and cells)",
            f"weights of {header.get('method')!r} that do not match {_META_FILE}",
            "the folder was edited or mixed with another one: save the model again",
        )
    return tensors


def _rows_by_name(adata, names: list[str], argument: str) -> np.ndarray:
    """Positions in ``adata`` of the saved cell ``names``; refuse missing or extra cells."""
    have = pd.Index(adata.obs_names.astype(str))
    saved = pd.Index(names)
    missing, extra = saved.difference(have, sort=False), have.difference(saved, sort=False)
    if len(missing) or len(extra):
        raise SpatialImputeInputError(
            argument, f"the {len(saved)} cells the model was trained on (matched by name, any order)",
            f"{adata.n_obs} cells: {len(missing)} of the model's cells missing (e.g. {list(missing[:3])}), "
            f"{len(extra)} unknown (e.g. {list(extra[:3])})",
            "a saved model imputes only its training data: pass those cells, or train a new model",
        )
    return have.get_indexer(saved)
