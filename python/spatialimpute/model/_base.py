"""Base class of every imputation model: validation, training bookkeeping, results, save/load."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .._version import __version__
from .._io import atomic_path, jsonable
from .._settings import apply_num_threads, resolve_device, seed_everything
from .._validation import SpatialImputeInputError, prepare_pair

_STATE_FILE = "state.safetensors"
_META_FILE = "model.json"


class BaseImputer:
    """Common machinery of the imputation models (scvi-tools style model class).

    Subclasses set :attr:`method_name`, return their hyper-parameters from
    :meth:`default_params`, and implement :meth:`_fit`, :meth:`_predict` and
    :meth:`_reliability` (and :meth:`_state_dict` / :meth:`_load_state_dict` to be saved).

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
    spatial_layer, reference_layer, spatial_key, labels_key, reference_labels_key, library_size_key
        Where to find counts, coordinates, labels and library sizes; see
        :func:`spatialimpute._validation.prepare_pair`.
    num_threads
        CPU threads for torch (default: torch's own choice).
    **params
        Method hyper-parameters, see :meth:`default_params`.
    """

    method_name: str = ""

    def __init__(self, spatial, reference, genes=None, *, seed: int = 0, device="auto", spatial_layer=None,
                 reference_layer=None, spatial_key: str = "spatial", labels_key=None, reference_labels_key=None,
                 library_size_key=None, num_threads: int | None = None, **params):
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
            raise SpatialImputeInputError("seed", "a non-negative integer", repr(seed), "pass e.g. seed=0")
        self.seed = int(seed)
        self.device = resolve_device(device)
        self.num_threads = num_threads
        self.data_kwargs = dict(
            spatial_layer=spatial_layer, reference_layer=reference_layer, spatial_key=spatial_key,
            labels_key=labels_key, reference_labels_key=reference_labels_key, library_size_key=library_size_key,
        )
        self.params = self._merge_params(params)
        self.paired = prepare_pair(spatial, reference, genes, **self.data_kwargs)
        self._spatial_obs = spatial.obs.copy()
        self.history: dict[str, list[float]] = {}
        self.timings: dict[str, float] = {}
        self.is_trained = False

    # ----------------------------------------------------------------- subclass API
    @classmethod
    def default_params(cls) -> dict:
        """Hyper-parameters of the method and their defaults."""
        return {}

    def _fit(self) -> None:
        raise NotImplementedError

    def _predict(self) -> np.ndarray:
        raise NotImplementedError

    def _reliability(self, prediction: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _state_dict(self) -> dict:
        """Trained state: tensors/arrays go to safetensors, everything else must be JSON."""
        return {}

    def _load_state_dict(self, state: dict) -> None:
        if state:
            raise NotImplementedError(f"{type(self).__name__} cannot restore a saved state")

    # ----------------------------------------------------------------- helpers
    @classmethod
    def _merge_params(cls, params: dict) -> dict:
        defaults = cls.default_params()
        unknown = sorted(set(params) - set(defaults))
        if unknown:
            raise SpatialImputeInputError(
                "params", f"parameters of method {cls.method_name!r} ({', '.join(sorted(defaults)) or 'none'})",
                f"unknown {unknown}", "check the spelling, or see the method's default_params()",
            )
        return {**defaults, **params}

    def log(self, name: str, value: float) -> None:
        """Append ``value`` to the loss/metric history ``name``."""
        self.history.setdefault(name, []).append(float(value))

    # ----------------------------------------------------------------- public API
    def train(self):
        """Fit the model to the paired data. Returns ``self``."""
        apply_num_threads(self.num_threads)
        seed_everything(self.seed)
        start = time.perf_counter()
        self._fit()
        self.timings["train_s"] = time.perf_counter() - start
        self.is_trained = True
        return self

    def impute(self):
        """Impute the target genes for every spatial cell (training first if needed).

        Returns
        -------
        anndata.AnnData
            obs = spatial cells (same order), var = target genes with ``var["reliability"]``
            and ``var["in_panel"]``, X = imputed log-normalised expression (float32),
            ``obsm["spatial"]`` = coordinates, ``uns["spatialimpute"]`` = provenance.
        """
        import anndata

        if not self.is_trained:
            self.train()
        apply_num_threads(self.num_threads)
        start = time.perf_counter()
        with torch.no_grad():
            prediction = np.asarray(self._predict(), dtype=np.float32)
        self.timings["predict_s"] = time.perf_counter() - start
        expected = (self.paired.n_cells, self.paired.n_targets)
        if prediction.shape != expected:
            raise RuntimeError(f"{type(self).__name__}._predict returned shape {prediction.shape}, expected {expected}")
        start = time.perf_counter()
        reliability = np.clip(np.asarray(self._reliability(prediction), dtype=np.float64), 0.0, 1.0)
        self.timings["reliability_s"] = time.perf_counter() - start
        var = pd.DataFrame(
            {"reliability": reliability, "in_panel": self.paired.target_in_panel},
            index=pd.Index(self.paired.target_genes, name=None),
        )
        obs = self._spatial_obs.copy()
        obs.index = self.paired.cell_names
        result = anndata.AnnData(X=prediction, obs=obs, var=var)
        result.obsm["spatial"] = self.paired.coords.copy()
        result.uns["spatialimpute"] = self.provenance()
        return result

    def provenance(self) -> dict:
        """What was run, how and how long: stored in ``uns["spatialimpute"]`` of results."""
        device_name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"
        return {
            "method": self.method_name,
            "version": __version__,
            "params": jsonable(self.params),
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
        """Save the trained model to directory ``path`` (safetensors + JSON, atomic)."""
        from safetensors.torch import save_file

        if not self.is_trained:
            raise RuntimeError("train() the model before saving it")
        state = self._state_dict()
        tensors = {k: _to_tensor(v) for k, v in state.items() if isinstance(v, (torch.Tensor, np.ndarray))}
        extra = {k: v for k, v in state.items() if k not in tensors}
        meta = {
            "method": self.method_name,
            "version": __version__,
            "params": jsonable(self.params),
            "seed": self.seed,
            "feature_genes": list(self.paired.feature_genes),
            "target_genes": list(self.paired.target_genes),
            "data": jsonable(self.data_kwargs),
            "history": self.history,
            "timings": self.timings,
            "state": jsonable(extra),
        }
        with atomic_path(path) as tmp:
            tmp.mkdir()
            save_file(tensors, str(tmp / _STATE_FILE))
            (tmp / _META_FILE).write_text(json.dumps(meta, indent=1))

    @classmethod
    def load(cls, path, spatial, reference, *, device="auto", num_threads: int | None = None):
        """Load a model saved with :meth:`save` and bind it to ``spatial`` and ``reference``.

        The spatial object must hold the same feature genes the model was trained on.
        """
        from safetensors.torch import load_file

        path = Path(path)
        meta_file = path / _META_FILE
        if not meta_file.is_file():
            raise SpatialImputeInputError("path", f"a directory written by {cls.__name__}.save()", str(path), "check the path")
        meta = json.loads(meta_file.read_text())
        if meta["method"] != cls.method_name:
            raise SpatialImputeInputError(
                "path", f"a saved {cls.method_name!r} model", f"a {meta['method']!r} model", f"load it with the {meta['method']} class",
            )
        model = cls(spatial, reference, genes=meta["target_genes"], seed=meta["seed"], device=device,
                    num_threads=num_threads, **meta["data"], **meta["params"])
        if model.paired.feature_genes != meta["feature_genes"]:
            missing = sorted(set(meta["feature_genes"]) - set(model.paired.feature_genes))
            raise SpatialImputeInputError(
                "spatial", "the panel genes the model was trained on",
                f"a different gene set (missing {missing[:5]})", "pass the spatial data the model was trained with",
            )
        state = {k: v.to(model.device) for k, v in load_file(str(path / _STATE_FILE)).items()}
        state.update(meta.get("state", {}))
        model._load_state_dict(state)
        model.history = meta.get("history", {})
        model.timings = meta.get("timings", {})
        model.is_trained = True
        return model

    def __repr__(self) -> str:
        p = self.paired
        status = "trained" if self.is_trained else "untrained"
        return (f"{type(self).__name__}({status}; {p.n_cells} spatial cells x {p.n_features} panel genes, "
                f"{p.n_reference} reference cells, {p.n_targets} target genes, device={self.device})")


def _to_tensor(value) -> torch.Tensor:
    tensor = torch.as_tensor(value) if isinstance(value, np.ndarray) else value
    return tensor.detach().cpu().contiguous()
