"""Benchmark: leave-genes-out cross-validation, accuracy metrics and reports (docs/benchmark.md).

Public API
----------
gene_metrics(truth, pred), cell_metrics(truth, pred)
    Per-gene / per-cell accuracy DataFrames.
cross_validate(spatial, reference, methods=("knn",), n_folds=5, ...) -> CVResult
    The protocol on in-memory AnnData objects.
run_benchmark(dataset=None, *, spatial=None, reference=None, methods=..., out=None, ...)
    Load a pair, cross-validate, write CSV / JSON / markdown / PNG.
list_datasets(data_dir=None)
    Names of the paired datasets found in the data directory.
"""

from .calibration import reliability_calibration
from .clustering_agreement import clustering_agreement, partition_agreement
from .cv import CVResult, cross_validate, make_gene_folds
from .metrics import CELL_METRICS, GENE_METRICS, cell_metrics, gene_metrics
from .report import markdown_table, run_benchmark, summary_table, write_report
from .shared_data import dataset_paths, default_data_dir, list_datasets, load_dataset

__all__ = [
    "gene_metrics",
    "cell_metrics",
    "GENE_METRICS",
    "CELL_METRICS",
    "cross_validate",
    "CVResult",
    "make_gene_folds",
    "clustering_agreement",
    "partition_agreement",
    "reliability_calibration",
    "run_benchmark",
    "write_report",
    "markdown_table",
    "summary_table",
    "list_datasets",
    "dataset_paths",
    "default_data_dir",
    "load_dataset",
]
