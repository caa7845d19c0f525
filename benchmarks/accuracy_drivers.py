"""Which per-gene quantities track a method's held-out accuracy (SPCC) on a shared pair.

Reads the ``gene_metrics.csv`` of a whole-CV benchmark run (``spatialimpute benchmark ...
--out DIR``) and prints the Spearman correlation over genes between each gene's SPCC and:
its reference statistics (detection, mean, SD, CV of the log-normalised reference: known for
every target gene), the same statistics of its spatial measurement (known only for panel
genes: an oracle no reliability model can use for unmeasured genes), and the method's
reliability score. It tells how much of the per-gene accuracy a reliability model can
predict from what it sees.

Example::

    SPATIALIMPUTE_DATA_DIR=/work/shared/data python benchmarks/accuracy_drivers.py \\
        --dataset seqfish_mouse_gastrulation --metrics DIR/gene_metrics.csv --method auto
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.stats import spearmanr

from spatialimpute.benchmark.shared_data import load_dataset
from spatialimpute.data.normalize import library_sizes, log_normalize


def _log_columns(adata, genes: list[str]) -> np.ndarray:
    counts = adata.X.toarray() if sparse.issparse(adata.X) else np.asarray(adata.X)
    values = log_normalize(counts.astype(np.float64), library_sizes(counts))
    return values[:, adata.var_names.get_indexer(genes)]


def _statistics(values: np.ndarray, prefix: str) -> dict[str, np.ndarray]:
    mean, sd = values.mean(axis=0), values.std(axis=0)
    return {f"{prefix} detection": (values > 0).mean(axis=0), f"{prefix} mean": mean, f"{prefix} SD": sd,
            f"{prefix} CV": sd / (mean + 1e-8)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--metrics", required=True, help="gene_metrics.csv of a benchmark run")
    parser.add_argument("--method", default="auto")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)

    metrics = pd.read_csv(args.metrics)
    metrics = metrics[metrics["method"] == args.method].dropna(subset=["spcc"])
    genes = list(metrics["gene"])
    spatial, reference = load_dataset(args.dataset, args.data_dir)
    drivers = {**_statistics(_log_columns(reference, genes), "reference"),
               **_statistics(_log_columns(spatial, genes), "spatial measurement (oracle)")}
    if "reliability" in metrics:
        drivers["reliability"] = metrics["reliability"].to_numpy()
    print(f"{args.dataset}, {args.method}: {len(genes)} genes, mean SPCC {metrics['spcc'].mean():.3f}")
    print("| quantity | Spearman with the gene's SPCC |\n|---|---|")
    for name, values in drivers.items():
        print(f"| {name} | {spearmanr(values, metrics['spcc'])[0]:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
