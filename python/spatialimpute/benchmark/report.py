"""Run a benchmark end to end and write its report files (CSV, JSON, markdown, PNG)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd

from .._io import write_bytes, write_h5ad, write_text
from .cv import CVResult, cross_validate
from .shared_data import dataset_paths

__all__ = ["run_benchmark", "write_report", "markdown_table", "spcc_figure", "OUTPUT_FILES"]

#: Files written by :func:`write_report` (predictions add ``predictions_<method>.h5ad``).
OUTPUT_FILES = {
    "gene_metrics": "gene_metrics.csv",
    "cell_metrics": "cell_metrics.csv",
    "summary_json": "summary.json",
    "summary_md": "summary.md",
    "figure": "spcc.png",
}


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "-"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return f"{value:.{digits}f}"


def summary_table(record: dict) -> pd.DataFrame:
    """One row per method, one column per number: the printable summary of a benchmark.

    Columns: the mean over genes of each gene metric (``spcc``, ``pcc``, ``ssim``, ``rmse``,
    ``js``, ``css_gene``, ``mse_gene``), ``spcc_median``, the mean over cells of the cell
    metrics (``css_cell``, ``mse_cell``), clustering agreement with the measured data
    (``ari``, ``nmi``; NaN when not computed), calibration (``calib_rho``: Spearman of
    reliability vs spcc over genes; ``calib_gain``: mean spcc of the top half of genes by
    reliability minus that of all genes; ``gene_cov`` / ``cell_cov``: empirical coverage of
    the per-gene and per-cell intervals, NaN without), Moran's I of the prediction and of the
    measurement (``moran_pred``, ``moran_meas``) and cost (``wall_s``, ``peak_rss_mib``).

    Parameters
    ----------
    record
        :meth:`CVResult.to_dict` (or a ``summary.json`` loaded back).
    """
    rows = {}
    for name, m in record["methods"].items():
        gm, cm = m["gene_metrics"], m["cell_metrics"]
        row = {k: v["mean"] for k, v in gm.items()}
        row["spcc_median"] = gm["spcc"]["median"]
        row.update({k: v["mean"] for k, v in cm.items()})
        ivm = (m.get("clustering") or {}).get("imputed_vs_measured") or {}
        row["ari"], row["nmi"] = ivm.get("ari"), ivm.get("nmi")
        cal = m.get("calibration") or {}
        row["calib_rho"], row["calib_gain"] = cal.get("spearman"), cal.get("gain_top_half")
        row["gene_cov"], row["cell_cov"] = cal.get("gene_interval_coverage"), cal.get("cell_interval_coverage")
        row["moran_pred"], row["moran_meas"] = cal.get("morans_i_predicted"), cal.get("morans_i_measured")
        row["wall_s"], row["peak_rss_mib"] = m["cost"]["total_wall_s"], m["cost"]["peak_rss_mib"]
        rows[name] = row
    table = pd.DataFrame.from_dict(rows, orient="index").astype(float)
    table.index.name = "method"
    return table


def markdown_table(summary: dict) -> str:
    """Render a benchmark record (:meth:`CVResult.to_dict`) as a markdown report.

    One row per method: mean SPCC/PCC/SSIM/RMSE/JS/CSS over genes (medians in a second
    table), clustering agreement (ARI/NMI of the imputed vs the measured Leiden clusters and
    vs annotated cell types when present), reliability calibration, total time and peak memory.
    """
    proto = summary["protocol"]
    machine = summary["machine"]
    lines = [
        f"# Benchmark: {summary.get('dataset') or 'custom pair'}",
        "",
        f"Leave-genes-out CV ({proto['n_folds']} folds, KFold random_state={proto['fold_seed']}, "
        f"method seed {proto['seed']}): {proto['n_spatial_cells']} spatial cells, "
        f"{proto['n_shared_genes']} shared genes, {proto['n_reference_cells']} reference cells.",
        f"Machine: {machine.get('device_name') or machine.get('cpu_model')} (device {machine.get('device')}), "
        f"{machine.get('cpu_usable')} usable CPUs, torch threads {machine.get('torch_threads')}."
        + (f" Whole run {summary['run_wall_s']:.1f} s (methods + scoring)." if summary.get("run_wall_s") else ""),
        "Time = fitting + prediction over all folds; peak RSS = the process's peak resident memory "
        "during a fold (max over folds).",
        "",
    ]
    has_labels = proto.get("labels_key") is not None
    for stat in ("mean", "median"):
        header = ["method", "SPCC", "PCC", "SSIM", "RMSE", "JS", "CSS gene", "CSS cell"]
        if stat == "mean":
            header += ["ARI vs measured", "NMI vs measured"]
            if has_labels:
                header += [f"ARI vs {proto['labels_key']}", f"NMI vs {proto['labels_key']}"]
            header += ["calib. rho", "time (s)", "peak RSS (MiB)", "peak GPU (MiB)"]
        lines += [f"## {stat.capitalize()} over genes / cells", "",
                  "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for name, m in summary["methods"].items():
            gm, cm = m["gene_metrics"], m["cell_metrics"]
            row = [name] + [_fmt(gm[k][stat]) for k in ("spcc", "pcc", "ssim", "rmse", "js", "css_gene")]
            row.append(_fmt(cm["css_cell"][stat]))
            if stat == "mean":
                cl = m.get("clustering") or {}
                ivm = cl.get("imputed_vs_measured") or {}
                row += [_fmt(ivm.get("ari")), _fmt(ivm.get("nmi"))]
                if has_labels:
                    ivl = cl.get("imputed_vs_labels") or {}
                    row += [_fmt(ivl.get("ari")), _fmt(ivl.get("nmi"))]
                cost = m["cost"]
                row += [_fmt(m["calibration"].get("spearman")), _fmt(cost["total_wall_s"], 1),
                        _fmt(cost["peak_rss_mib"], 0), _fmt(cost.get("peak_gpu_mib"), 0)]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    undefined = {n: m["n_undefined"] for n, m in summary["methods"].items() if any(m["n_undefined"].values())}
    if undefined:
        lines += ["Undefined correlations/cosines (constant or all-zero vectors) counted as 0: "
                  + "; ".join(f"{n}: " + ", ".join(f"{k}={v}" for k, v in u.items() if v) for n, u in undefined.items()),
                  ""]
    lines += ["Calibration: Spearman(reliability, spcc) over genes; mean spcc of the top half of genes by "
              "reliability vs all genes:", ""]
    for name, m in summary["methods"].items():
        cal = m["calibration"]
        line = (f"- {name}: rho {_fmt(cal.get('spearman'))}, top half {_fmt(cal.get('mean_spcc_top_half'))} "
                f"vs all {_fmt(cal.get('mean_spcc_all'))}; Moran's I predicted {_fmt(cal.get('morans_i_predicted'))} "
                f"vs measured {_fmt(cal.get('morans_i_measured'))}")
        if cal.get("cell_interval_coverage") is not None:
            line += (f"; interval coverage per gene {_fmt(cal.get('gene_interval_coverage'))}, per cell and gene "
                     f"{_fmt(cal.get('cell_interval_coverage'))} (genes' 10-90% range "
                     f"{_fmt(cal.get('cell_interval_coverage_gene_q10'))}-{_fmt(cal.get('cell_interval_coverage_gene_q90'))})")
        lines.append(line)
    lines.append("")
    for name, m in summary["methods"].items():
        if m.get("ensemble"):
            lines += [f"Ensemble choices of {name} per fold (weights; inner-CV SPCC; smoothing):", ""]
            for k, fold in enumerate(m["ensemble"]):
                weights = ", ".join(f"{n} {w:.2f} ({fold['inner_spcc'][n]:.3f})"
                                    for n, w in sorted(fold["weights"].items(), key=lambda kv: -kv[1]))
                sm = fold["smoothing"]
                rp = fold.get("residual_propagation") or {}
                lines.append(f"- fold {k}: {weights}; smoothing k={sm['neighbors']} strength {sm['strength']}; "
                             f"residual propagation {rp.get('strength')}")
            lines.append("")
    return "\n".join(lines)


def spcc_figure(result: CVResult) -> bytes:
    """PNG bytes: per-gene SPCC distribution per method (box + points) and reliability vs SPCC."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    methods = list(result.gene_scores)
    fig = Figure(figsize=(4 + 1.2 * len(methods) + 4.5, 4.2), dpi=120)
    FigureCanvasAgg(fig)
    ax_box, ax_rel = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1 + 0.4 * len(methods), 1.6]})
    data = [result.gene_scores[m]["spcc"].to_numpy() for m in methods]
    ax_box.boxplot(data, showfliers=False)
    ax_box.set_xticks(np.arange(1, len(methods) + 1), methods)
    rng = np.random.default_rng(0)
    for i, values in enumerate(data, start=1):
        ax_box.scatter(i + rng.uniform(-0.15, 0.15, values.size), values, s=8, alpha=0.5, color="tab:blue")
    ax_box.axhline(0.0, color="grey", lw=0.8, ls="--")
    ax_box.set_ylabel("per-gene SPCC (held-out)")
    ax_box.set_title(f"{result.record.get('dataset') or 'benchmark'}: SPCC per gene")
    any_rel = False
    for m in methods:
        df = result.gene_scores[m]
        ok = np.isfinite(df["reliability"].to_numpy())
        if ok.any():
            any_rel = True
            rho = result.calibration[m].get("spearman")
            ax_rel.scatter(df["reliability"][ok], df["spcc"][ok], s=10, alpha=0.7,
                           label=f"{m} (rho {rho:.2f})" if rho is not None else m)
    if any_rel:
        ax_rel.legend(fontsize=8)
    else:
        ax_rel.text(0.5, 0.5, "no reliability scores", ha="center", va="center", transform=ax_rel.transAxes)
    ax_rel.set_xlabel("reliability")
    ax_rel.set_ylabel("SPCC")
    ax_rel.set_title("calibration")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def write_report(result: CVResult, out, *, save_predictions: bool = False) -> dict:
    """Write the report files of a :class:`CVResult` into directory ``out`` (created).

    Files (each written atomically: temp file + ``os.replace``): ``gene_metrics.csv``
    (long format, one row per method and gene), ``cell_metrics.csv`` (one row per method and
    cell), ``summary.json``, ``summary.md`` (markdown tables), ``spcc.png`` (figure), and with
    ``save_predictions`` one ``predictions_<method>.h5ad`` per method.

    Returns
    -------
    dict
        Output kind -> path written.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {kind: out / name for kind, name in OUTPUT_FILES.items()}
    if save_predictions:
        for m in result.predictions:
            files[f"predictions_{m}"] = out / f"predictions_{m}.h5ad"
    summary = result.to_dict()
    summary["outputs"] = {k: str(v) for k, v in files.items()}
    write_text(result.gene_table().to_csv(index=False), files["gene_metrics"])
    write_text(result.cell_table().to_csv(index=False), files["cell_metrics"])
    write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n", files["summary_json"])
    write_text(markdown_table(summary), files["summary_md"])
    write_bytes(spcc_figure(result), files["figure"])
    if save_predictions:
        for m, adata in result.predictions.items():
            write_h5ad(adata, files[f"predictions_{m}"])
    return files


def run_benchmark(
    dataset: str | None = None,
    *,
    spatial=None,
    reference=None,
    methods=("knn",),
    out=None,
    n_folds: int = 5,
    seed: int = 0,
    device="auto",
    data_dir=None,
    method_params=None,
    layer: str | None = None,
    spatial_key: str = "spatial",
    labels_key: str | None = "cell_type",
    clustering: bool = True,
    save_predictions: bool = False,
) -> CVResult:
    """Cross-validate methods on a paired dataset and (optionally) write the report.

    Parameters
    ----------
    dataset
        Name of a pair in the data directory (``<data_dir>/<name>/{spatial,scrna}.h5ad``);
        give either this or both ``spatial`` and ``reference``.
    spatial, reference
        ``.h5ad`` paths or AnnData objects (raw counts; coordinates in
        ``spatial.obsm[spatial_key]``).
    methods
        Method names (comma-separated string or sequence) or BaseImputer subclasses.
    out
        Output directory for the report files (see :func:`write_report`); ``None`` writes
        nothing.
    n_folds, seed, device, method_params, layer, spatial_key, labels_key, clustering
        As in :func:`~spatialimpute.benchmark.cv.cross_validate`.
    data_dir
        Directory of the datasets; default ``$SPATIALIMPUTE_DATA_DIR`` or ``../shared/data``
        (see :func:`~spatialimpute.benchmark.shared_data.default_data_dir`).
    save_predictions
        Also write each method's assembled prediction as ``.h5ad``.

    Returns
    -------
    CVResult
        With ``summary["outputs"]`` listing the files written (when ``out`` is given).
    """
    import anndata

    from .._validation import SpatialImputeInputError

    if dataset is not None and (spatial is not None or reference is not None):
        raise SpatialImputeInputError(
            "dataset", "either a dataset name or spatial + reference", "both",
            "pass --dataset NAME alone, or --spatial FILE --reference FILE",
        )
    if dataset is not None:
        spatial_path, reference_path = dataset_paths(dataset, data_dir)
        spatial, reference = anndata.read_h5ad(spatial_path), anndata.read_h5ad(reference_path)
    elif spatial is None or reference is None:
        raise SpatialImputeInputError(
            "spatial", "a dataset name, or both spatial and reference", "neither a dataset nor both files",
            "pass --dataset NAME (see the list of datasets) or --spatial FILE --reference FILE",
        )
    else:
        spatial = _read(spatial, "spatial")
        reference = _read(reference, "reference")
    if isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",") if m.strip()]
    result = cross_validate(
        spatial, reference, methods=methods, n_folds=n_folds, seed=seed, device=device,
        method_params=method_params, layer=layer, spatial_key=spatial_key, labels_key=labels_key,
        clustering=clustering, dataset=dataset,
    )
    if out is not None:
        files = write_report(result, out, save_predictions=save_predictions)
        result.record["outputs"] = {k: str(v) for k, v in files.items()}
    return result


def _read(obj, argument: str):
    import anndata

    from .._validation import SpatialImputeInputError

    if isinstance(obj, anndata.AnnData):
        return obj
    path = Path(obj)
    if not path.is_file():
        raise SpatialImputeInputError(
            argument, "an existing .h5ad file or an AnnData", f"no file at {str(path)!r}", "check the path",
        )
    return anndata.read_h5ad(path)
