"""Leave-genes-out cross-validation (docs/benchmark.md) and its scoring.

For every method: the spatial data are normalised once on their full gene set, the sorted
shared genes are split by ``KFold(n_folds, shuffle=True, random_state=fold_seed)``, and in fold
``k`` the method is built on a spatial AnnData that holds *only* the training genes (raw counts,
coordinates, cell metadata and each cell's full-panel library size) plus the whole reference,
and asked for the held-out genes. The folds are assembled into one cells x shared-genes
prediction, scored per gene, per cell, by clustering agreement and by reliability calibration,
with wall time and peak memory per fold.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.model_selection import KFold

from .._io import jsonable
from .calibration import interval_coverage, reliability_calibration, spatial_structure
from .clustering_agreement import clustering_agreement
from .metrics import CELL_METRICS, GENE_METRICS, cell_metrics, gene_metrics
from .resources import ResourceMonitor, machine_info

__all__ = ["CVResult", "cross_validate", "make_gene_folds", "LIBRARY_SIZE_KEY"]

#: obs column of the fold's spatial AnnData holding each cell's full-panel library size.
LIBRARY_SIZE_KEY = "spatialimpute_cv_library_size"


@dataclass
class CVResult:
    """Outcome of :func:`cross_validate`.

    Attributes
    ----------
    methods
        Method labels, in the order run.
    genes
        The sorted shared genes (the scored columns).
    folds
        Held-out genes of each fold (each shared gene appears in exactly one fold).
    truth
        AnnData, spatial cells x shared genes: the normalised measurement that is scored.
    predictions
        Per method an AnnData (spatial cells x shared genes, float32 log-normalised
        prediction) with ``var["fold"]`` and ``var["reliability"]`` (NaN when the method gave
        none), ``obsm["spatial"]`` and ``uns["spatialimpute_cv"]``.
    gene_scores
        Per method a DataFrame indexed by gene: :data:`~.metrics.GENE_METRICS`, their
        ``*_undefined`` flags, ``fold`` and ``reliability``.
    cell_scores
        Per method a DataFrame indexed by cell: :data:`~.metrics.CELL_METRICS` and flags.
    clustering
        Per method the dict of :func:`~.clustering_agreement.clustering_agreement`
        (empty when clustering was switched off).
    calibration
        Per method the dict of :func:`~.calibration.reliability_calibration`, updated with
        :func:`~.calibration.interval_coverage` and :func:`~.calibration.spatial_structure`.
    ensemble
        Per ensemble method (``auto``) one dict per fold: the members' weights and inner-CV
        scores and the chosen smoothing.
    cost
        Per method: ``total_wall_s`` (all folds of the method, fitting + prediction),
        ``mean_fold_wall_s``, ``folds`` (one dict per fold: wall time, peak RSS of the process
        during the fold, RSS at its start, peak GPU memory), ``peak_rss_mib`` and
        ``peak_gpu_mib`` (maxima over folds), ``scoring_metrics_s`` and
        ``scoring_clustering_s`` (time spent scoring, not part of the method's cost).
    record
        JSON-ready dict: protocol, machine, ``run_wall_s`` (the whole cross-validation), and
        per method the mean and median of every metric, undefined counts, clustering,
        calibration and cost. Also returned by :meth:`to_dict`.
    """

    methods: list[str]
    genes: list[str]
    folds: list[list[str]]
    truth: object
    predictions: dict = field(default_factory=dict)
    gene_scores: dict = field(default_factory=dict)
    cell_scores: dict = field(default_factory=dict)
    clustering: dict = field(default_factory=dict)
    calibration: dict = field(default_factory=dict)
    cost: dict = field(default_factory=dict)
    ensemble: dict = field(default_factory=dict)
    record: dict = field(default_factory=dict)

    @property
    def summary(self) -> pd.DataFrame:
        """Methods x metrics table (see :func:`~.report.summary_table`): means over genes,
        medians, clustering agreement, calibration and cost."""
        from .report import summary_table

        return summary_table(self.record)

    def to_dict(self) -> dict:
        """The full JSON-ready record of the run (a copy of :attr:`record`)."""
        import copy

        return copy.deepcopy(self.record)

    def gene_table(self) -> pd.DataFrame:
        """All methods' per-gene scores in long format (columns ``method``, ``gene``, ...)."""
        frames = [df.reset_index().assign(method=m) for m, df in self.gene_scores.items()]
        table = pd.concat(frames, ignore_index=True)
        return table[["method"] + [c for c in table.columns if c != "method"]]

    def cell_table(self) -> pd.DataFrame:
        """All methods' per-cell scores in long format (columns ``method``, ``cell``, ...)."""
        frames = [df.reset_index().assign(method=m) for m, df in self.cell_scores.items()]
        table = pd.concat(frames, ignore_index=True)
        return table[["method"] + [c for c in table.columns if c != "method"]]


def make_gene_folds(genes: Sequence[str], n_folds: int = 5, random_state: int = 0) -> list[list[str]]:
    """Split genes into folds with ``KFold(n_folds, shuffle=True, random_state)``.

    Parameters
    ----------
    genes
        Gene names, in the order KFold indexes them (the protocol sorts them first).
    n_folds
        Number of folds, ``2 <= n_folds <= len(genes)``.
    random_state
        KFold's shuffling seed (the protocol uses 0).

    Returns
    -------
    list of list of str
        Held-out genes of each fold, each in the order of ``genes``.
    """
    from .._validation import SpatialImputeInputError

    genes = list(genes)
    if isinstance(n_folds, bool) or not isinstance(n_folds, (int, np.integer)) or not 2 <= n_folds <= len(genes):
        raise SpatialImputeInputError(
            "n_folds", f"an integer between 2 and the number of shared genes ({len(genes)})", repr(n_folds),
            "use n_folds=5 (the protocol), or fewer folds for a small panel",
        )
    kfold = KFold(n_splits=int(n_folds), shuffle=True, random_state=random_state)
    return [[genes[i] for i in test] for _, test in kfold.split(np.arange(len(genes)))]


def _resolve_methods(methods, method_params) -> list[tuple[str, type, dict]]:
    from .._validation import SpatialImputeInputError
    from ..model._base import BaseImputer
    from ..model.registry import get_method

    if isinstance(methods, str) or isinstance(methods, type):
        methods = [methods]
    methods = list(methods)
    if not methods:
        raise SpatialImputeInputError("methods", "at least one method", "an empty list", 'pass methods=("knn",)')
    resolved = []
    for m in methods:
        if isinstance(m, str):
            label, cls = m, get_method(m)
        elif isinstance(m, type) and issubclass(m, BaseImputer):
            label, cls = getattr(m, "method_name", None) or m.__name__, m
        else:
            raise SpatialImputeInputError(
                "methods", "registered method names or BaseImputer subclasses", repr(m),
                "pass e.g. methods=('knn', 'stimpute')",
            )
        resolved.append((label, cls))
    labels = [label for label, _ in resolved]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise SpatialImputeInputError("methods", "each method once", f"repeated {dup}", "list every method once")
    params = dict(method_params or {})
    unknown = sorted(set(params) - set(labels))
    if unknown:
        raise SpatialImputeInputError(
            "method_params", f"keys among the methods run ({labels})", f"{unknown}",
            "key method_params by method name, e.g. {'knn': {'k': 30}}",
        )
    out = []
    for label, cls in resolved:
        p = params.get(label) or {}
        if not isinstance(p, Mapping):
            raise SpatialImputeInputError(
                "method_params", "a dict of parameters per method", f"{type(p).__name__} for {label!r}",
                "pass e.g. {'knn': {'k': 30}}",
            )
        out.append((label, cls, dict(p)))
    return out


def _spatial_fold(spatial, counts, train_idx: np.ndarray, genes: list[str], library_size: np.ndarray,
                  coords: np.ndarray, spatial_key: str):
    """A new AnnData holding only the training genes of the spatial data."""
    import anndata

    sub = counts[:, train_idx]
    sub = sub.copy() if sp.issparse(sub) else np.array(sub, copy=True)
    obs = spatial.obs.copy()
    obs[LIBRARY_SIZE_KEY] = library_size
    var = pd.DataFrame(index=pd.Index(list(genes), dtype=str))
    fold = anndata.AnnData(X=sub, obs=obs, var=var)
    fold.obsm[spatial_key] = coords.copy()
    return fold


def _summarise_column(values: pd.Series) -> dict:
    v = values.to_numpy(dtype=np.float64)
    return {"mean": float(np.mean(v)), "median": float(np.median(v))}


def cross_validate(
    spatial,
    reference,
    methods=("knn",),
    n_folds: int = 5,
    seed: int = 0,
    device="auto",
    method_params: Mapping[str, Mapping] | None = None,
    layer: str | None = None,
    *,
    spatial_layer: str | None = None,
    reference_layer: str | None = None,
    spatial_key: str = "spatial",
    labels_key: str | None = "cell_type",
    fold_seed: int = 0,
    clustering: bool = True,
    dataset: str | None = None,
) -> CVResult:
    """Leave-genes-out cross-validation of imputation methods (docs/benchmark.md).

    Parameters
    ----------
    spatial
        AnnData, spatial cells x panel genes, raw counts in ``X`` (or a layer), coordinates
        in ``obsm[spatial_key]``. Not modified.
    reference
        AnnData, reference cells x genes, raw counts. Passed whole to every fold; not modified.
    methods
        Registered method names (see :mod:`spatialimpute.model.registry`) and/or
        :class:`~spatialimpute.model._base.BaseImputer` subclasses.
    n_folds
        Number of gene folds (protocol: 5).
    seed
        Seed passed to every method in every fold.
    device
        ``"auto"``, ``"cpu"``, ``"cuda"``...; resolved once and passed to the methods.
    method_params
        Extra keyword arguments per method label, e.g. ``{"knn": {"k": 30}}``.
    layer
        Layer holding raw counts in both objects (``None``: ``X``); ``spatial_layer`` /
        ``reference_layer`` override it per object.
    spatial_key
        ``obsm`` key of the spatial coordinates.
    labels_key
        ``spatial.obs`` column of annotated cell types for the clustering comparison; ignored
        when absent from ``spatial.obs``.
    fold_seed
        KFold's ``random_state`` (protocol: 0).
    clustering
        Compute Leiden clustering agreement (the slowest part of the scoring).
    dataset
        Name recorded in the summary.

    Returns
    -------
    CVResult
        Predictions, per-gene and per-cell scores, clustering agreement, calibration, cost and
        a JSON-ready summary.

    Notes
    -----
    In fold ``k`` the method receives a *new* spatial AnnData with only the training genes:
    raw counts in ``X``, ``obs`` (with the full-panel library size in
    ``obs[LIBRARY_SIZE_KEY]``, passed as ``library_size_key`` so that the method normalises
    exactly as the protocol does), ``obsm[spatial_key]``; and ``genes`` = the held-out genes.
    """
    import anndata

    t_run = time.perf_counter()
    from .._settings import progress, resolve_device
    from .._validation import SpatialImputeInputError, check_anndata, get_coordinates, get_matrix
    from ..data.normalize import library_sizes, log_normalize

    spatial_layer = layer if spatial_layer is None else spatial_layer
    reference_layer = layer if reference_layer is None else reference_layer
    check_anndata(spatial, "spatial")
    check_anndata(reference, "reference")
    counts = get_matrix(spatial, spatial_layer, "spatial")
    get_matrix(reference, reference_layer, "reference")
    coords = get_coordinates(spatial, spatial_key)
    resolved = _resolve_methods(methods, method_params)
    dev = resolve_device(device)

    spatial_genes = pd.Index(spatial.var_names.astype(str))
    reference_genes = set(reference.var_names.astype(str))
    genes = sorted(g for g in spatial_genes if g in reference_genes)
    if len(genes) < 2:
        raise SpatialImputeInputError(
            "reference", "at least 2 genes shared with the spatial panel", f"{len(genes)} shared genes",
            "use a reference measuring the panel genes (same gene identifiers)",
        )
    folds = make_gene_folds(genes, n_folds, random_state=fold_seed)
    fold_of = {g: k for k, fold in enumerate(folds) for g in fold}
    col_of = {g: i for i, g in enumerate(spatial_genes)}
    pos_of = {g: i for i, g in enumerate(genes)}

    # Normalise once on the full gene set (protocol step 2), then keep the shared genes.
    library_size = library_sizes(counts)
    lognorm = log_normalize(counts, library_size)
    truth_values = lognorm[:, [col_of[g] for g in genes]].astype(np.float64)
    truth = anndata.AnnData(
        X=truth_values.astype(np.float32), obs=pd.DataFrame(index=spatial.obs_names.copy()),
        var=pd.DataFrame({"fold": [fold_of[g] for g in genes]}, index=pd.Index(genes)),
    )
    truth.obsm["spatial"] = coords.copy()
    labels = None
    if labels_key is not None and labels_key in spatial.obs:
        labels = spatial.obs[labels_key].to_numpy()

    result = CVResult(methods=[label for label, _, _ in resolved], genes=genes, folds=folds, truth=truth)
    for label, cls, params in resolved:
        pred = np.zeros((spatial.n_obs, len(genes)), dtype=np.float32)
        reliability = np.full(len(genes), np.nan)
        gene_interval = np.full((len(genes), 2), np.nan)
        cell_interval: dict[str, np.ndarray] = {}
        fold_costs, fold_choices = [], []
        t_method = time.perf_counter()
        for k in progress(range(len(folds)), total=len(folds), desc=f"{label}: folds"):
            heldout = folds[k]
            held = set(heldout)
            train = [g for g in genes if g not in held]
            fold_data = _spatial_fold(spatial, counts, np.array([col_of[g] for g in train]), train,
                                      library_size, coords, spatial_key)
            with ResourceMonitor(dev) as monitor:
                model = cls(fold_data, reference, genes=list(heldout), seed=seed, device=dev,
                            spatial_key=spatial_key, reference_layer=reference_layer,
                            library_size_key=LIBRARY_SIZE_KEY, **params)
                out = model.impute()
            del model
            _check_fold_output(out, label, k, heldout, spatial.obs_names)
            order = pd.Index(out.var_names.astype(str)).get_indexer(heldout)
            values = out.X.toarray() if sp.issparse(out.X) else np.asarray(out.X)
            cols = [pos_of[g] for g in heldout]
            pred[:, cols] = values[:, order]
            if "reliability" in out.var:
                reliability[cols] = pd.to_numeric(out.var["reliability"], errors="coerce").to_numpy(np.float64)[order]
            if {"reliability_lower", "reliability_upper"} <= set(out.var.columns):
                gene_interval[cols] = out.var[["reliability_lower", "reliability_upper"]].to_numpy(np.float64)[order]
            for bound in ("lower", "upper"):
                if bound in out.layers:
                    cell_interval.setdefault(bound, np.full(pred.shape, np.nan, dtype=np.float32))[:, cols] = \
                        np.asarray(out.layers[bound])[:, order]
            if "auto" in out.uns.get("spatialimpute", {}):
                fold_choices.append(_ensemble_choice(out.uns["spatialimpute"]["auto"]))
            fold_costs.append({"fold": k, "n_heldout": len(heldout), **monitor.as_dict()})
        total_wall = time.perf_counter() - t_method
        if not np.isfinite(pred).all():
            raise RuntimeError(
                f"method {label!r} predicted {int((~np.isfinite(pred)).sum())} NaN/Inf values; "
                "this is a bug in the method (it must return finite log-normalised values)"
            )
        pred_ad = anndata.AnnData(
            X=pred, obs=spatial.obs.copy(),
            var=pd.DataFrame({"fold": [fold_of[g] for g in genes], "reliability": reliability},
                             index=pd.Index(genes)),
        )
        pred_ad.obsm["spatial"] = coords.copy()
        pred_ad.uns["spatialimpute_cv"] = {"method": label, "n_folds": len(folds), "seed": seed,
                                           "fold_seed": fold_seed, "device": str(dev)}
        result.predictions[label] = pred_ad

        t_score = time.perf_counter()
        pred64 = pred.astype(np.float64)
        g_scores = gene_metrics(truth_values, pred64)
        g_scores.index = pd.Index(genes, name="gene")
        g_scores["fold"] = [fold_of[g] for g in genes]
        g_scores["reliability"] = reliability
        c_scores = cell_metrics(truth_values, pred64)
        c_scores.index = pd.Index(spatial.obs_names.astype(str), name="cell")
        result.gene_scores[label] = g_scores
        result.cell_scores[label] = c_scores
        result.calibration[label] = reliability_calibration(reliability, g_scores["spcc"].to_numpy())
        result.calibration[label].update(interval_coverage(
            truth_values, g_scores["spcc"].to_numpy(), gene_interval,
            cell_interval.get("lower"), cell_interval.get("upper")))
        result.calibration[label].update(spatial_structure(truth_values, pred64, coords))
        if fold_choices:
            result.ensemble[label] = fold_choices
        metrics_s = time.perf_counter() - t_score
        t_cluster = time.perf_counter()
        result.clustering[label] = clustering_agreement(truth_values, pred64, labels) if clustering else {}
        clustering_s = time.perf_counter() - t_cluster
        peak_gpu = [c["peak_gpu_mib"] for c in fold_costs if c["peak_gpu_mib"] is not None]
        result.cost[label] = {
            "total_wall_s": total_wall,
            "scoring_metrics_s": metrics_s,
            "scoring_clustering_s": clustering_s,
            "mean_fold_wall_s": float(np.mean([c["wall_s"] for c in fold_costs])),
            "peak_rss_mib": max(c["peak_rss_mib"] for c in fold_costs),
            "peak_gpu_mib": max(peak_gpu) if peak_gpu else None,
            "peak_rss_scope": fold_costs[0]["peak_rss_scope"],
            "folds": fold_costs,
        }
    result.record = _summary(result, spatial, reference, n_folds, seed, fold_seed, dev, dataset, labels_key,
                              labels is not None, resolved)
    result.record["run_wall_s"] = time.perf_counter() - t_run
    return result


def _ensemble_choice(info: dict) -> dict:
    """What an ``auto`` model chose in one fold (from its provenance)."""
    smoothing = info.get("smoothing", {})
    return {"weights": {n: m["weight"] for n, m in info["members"].items()},
            "inner_spcc": {n: m["inner_spcc"] for n, m in info["members"].items()},
            "inner_seconds": {n: m["inner_seconds"] for n, m in info["members"].items()},
            "ensemble_inner_spcc": info.get("ensemble_inner_spcc"),
            "smoothing": {k: smoothing.get(k) for k in ("neighbors", "strength", "spcc", "morans_i_measured",
                                                         "morans_i_unrefined", "morans_i_refined")},
            "residual_propagation": {k: info.get("residual_propagation", {}).get(k)
                                     for k in ("strength", "spcc", "available")}}


def _check_fold_output(out, label: str, k: int, heldout: list[str], cell_names) -> None:
    expected = set(heldout)
    found = [str(g) for g in out.var_names]
    if set(found) != expected or len(found) != len(heldout):
        raise RuntimeError(
            f"method {label!r}, fold {k}: expected predictions for the {len(heldout)} held-out genes, "
            f"got {len(found)} genes ({sorted(set(found) ^ expected)[:5]} differ); the method must return "
            "exactly the requested genes"
        )
    if out.n_obs != len(cell_names) or not pd.Index(out.obs_names).equals(pd.Index(cell_names)):
        raise RuntimeError(
            f"method {label!r}, fold {k}: predictions must keep the spatial cells in order "
            f"({len(cell_names)} cells); got {out.n_obs}"
        )


def _summary(result: CVResult, spatial, reference, n_folds, seed, fold_seed, dev, dataset, labels_key,
             has_labels, resolved) -> dict:
    methods = {}
    for label, _, params in resolved:
        g = result.gene_scores[label]
        c = result.cell_scores[label]
        methods[label] = {
            "params": params,
            "gene_metrics": {m: _summarise_column(g[m]) for m in GENE_METRICS},
            "cell_metrics": {m: _summarise_column(c[m]) for m in CELL_METRICS},
            "n_undefined": {**g.attrs.get("n_undefined", {}), **c.attrs.get("n_undefined", {})},
            "clustering": result.clustering[label],
            "calibration": result.calibration[label],
            "cost": result.cost[label],
        }
        if label in result.ensemble:
            methods[label]["ensemble"] = result.ensemble[label]
    summary = {
        "dataset": dataset,
        "protocol": {
            "description": "leave-genes-out CV (docs/benchmark.md): normalise once on the full gene set, "
                           "KFold over sorted shared genes, fold sees training genes only",
            "n_folds": len(result.folds),
            "fold_seed": fold_seed,
            "seed": seed,
            "n_spatial_cells": int(spatial.n_obs),
            "n_spatial_genes": int(spatial.n_vars),
            "n_reference_cells": int(reference.n_obs),
            "n_reference_genes": int(reference.n_vars),
            "n_shared_genes": len(result.genes),
            "labels_key": labels_key if has_labels else None,
            "folds": result.folds,
        },
        "machine": machine_info(dev),
        "methods": methods,
    }
    return jsonable(summary)
