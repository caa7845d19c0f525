"""Atlas scale: impute every missing gene for many spatial cells, out of core (issue 16).

For each size N: a simulated pair of N spatial cells x 300 panel genes and a reference of
50,000 cells x 5,000 genes; each method imputes all 4,700 missing genes with
``impute(out=store.zarr)`` (train once, predict in blocks, written block by block). Every
run is a fresh Python process; the table reports wall time (construction, training and
prediction), the peak RSS of the process and its RSS once the inputs were built, the store's
size on disk and the time to read one gene's column back from it.

The spatial cells are simulated in tiles of at most 20,000 cells from one tissue model
(same genes and programs; each tile's counts binomially thinned with its own seed and its
coordinates shifted), so that the simulation itself never holds N x 5,000 values.

Usage::

    python benchmarks/atlas_scale.py                                   # 100k, 300k, 1M cells; knn, stimpute
    python benchmarks/atlas_scale.py --sizes 5000 --reference-cells 3000 --genes 600   # a quick check
    python benchmarks/atlas_scale.py --sizes 100000 --schedulers local,cluster   # also through a 2-worker LocalCluster
    python benchmarks/atlas_scale.py --sizes 100000 --methods knn --float16-loss   # float16 store vs float32
    python benchmarks/atlas_scale.py --sizes 20000 --methods auto --cell-order spatial   # cells sorted by position

The peak RSS is also given per phase of the call (the highest RSS sampled every 0.2 s in each;
construction is the time the call's parts do not account for, taken to come first).

State the machine's load with the numbers: two cores shared with anything else give other times.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

TILE = 20_000


def simulate(n_cells: int, n_reference: int, n_genes: int, n_panel: int):
    """``(spatial, reference)``: ``n_cells`` spatial cells in tiles of one simulated tissue."""
    import anndata
    import numpy as np

    from spatialimpute.datasets import simulate_pair

    tile = min(n_cells, TILE)
    spatial, reference, _ = simulate_pair(n_spatial=tile, n_reference=n_reference, n_genes=n_genes,
                                          n_panel=n_panel, seed=0)
    counts = np.asarray(spatial.X.toarray() if hasattr(spatial.X, "toarray") else spatial.X)
    xy = spatial.obsm["spatial"]
    width = float(np.ptp(xy[:, 0])) * 1.05 + 1.0
    parts = []
    for i, start in enumerate(range(0, n_cells, tile)):
        n = min(tile, n_cells - start)
        rng = np.random.default_rng(i)
        part = anndata.AnnData(X=rng.binomial(counts[:n].astype(np.int64), 0.9).astype(np.float32),
                               var=spatial.var.copy())
        part.obs_names = [f"cell_{start + j}" for j in range(n)]
        part.obsm["spatial"] = xy[:n] + np.array([i * width, 0.0])
        parts.append(part)
    spatial = parts[0] if len(parts) == 1 else anndata.concat(parts, merge="same")
    return spatial, reference


def inputs(n_cells: int, n_reference: int, n_genes: int, n_panel: int, cell_order: str):
    """The simulated pair, the spatial cells sorted by :func:`si.spatial_order` for ``cell_order="spatial"``.

    The heap the sort's copy freed is handed back to the operating system, so that the RSS
    then measured is the inputs' (docs/notes/atlas.md, twenty-third session).
    """
    import gc

    import spatialimpute as si
    from spatialimpute._memory import release_freed_memory

    spatial, reference = simulate(n_cells, n_reference, n_genes, n_panel)
    if cell_order == "spatial":
        spatial = spatial[si.spatial_order(spatial.obsm["spatial"])].copy()
        gc.collect()
        release_freed_memory()
    return spatial, reference


def _rss_gb(peak: bool) -> float:
    """This process's peak RSS since :func:`_reset_peak_rss` (``VmHWM``) or its current RSS (``VmRSS``), in GB."""
    key = "VmHWM:" if peak else "VmRSS:"
    with open("/proc/self/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith(key))
    return kb * 1024 / 1e9


def _reset_peak_rss() -> None:
    """Start the peak-RSS count afresh (Linux ``clear_refs``), so the simulation's own peak is not counted."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


class RSSSampler:
    """The process's RSS every ``interval`` seconds in a background thread, to place the peak in time."""

    def __init__(self, interval: float = 0.2) -> None:
        import threading

        self.interval, self.samples = interval, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        start = time.perf_counter()
        while not self._stop.is_set():
            self.samples.append((time.perf_counter() - start, _rss_gb(peak=False)))
            self._stop.wait(self.interval)

    def __enter__(self) -> "RSSSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def phase_peaks(self, phases: list[tuple[str, float]]) -> dict:
        """Highest sampled RSS (GB) within each phase, the phases ``(name, seconds)`` taken to follow each other."""
        out, start = {}, 0.0
        for name, seconds in phases:
            inside = [rss for t, rss in self.samples if start <= t < start + seconds]
            out[name] = max(inside) if inside else float("nan")
            start += seconds
        return out


def _size_gb(path: str) -> float:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files) / 1e9


def run_one(n_cells: int, method: str, args) -> dict:
    """One imputation in this process; returns its measurements."""
    import numpy as np
    import torch

    import spatialimpute as si
    from spatialimpute.io.zarr_store import read_lazy

    torch.set_num_threads(args.threads)
    si.settings.progress = False
    spatial, reference = inputs(n_cells, args.reference_cells, args.genes, args.panel, args.cell_order)
    input_rss = _rss_gb(peak=False)
    _reset_peak_rss()
    store = os.path.join(args.workdir, f"{method}_{n_cells}_{args.dtype}{'_cluster' if args.in_cluster else ''}.zarr")
    cluster = client = None
    if args.in_cluster:
        import distributed

        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                           dashboard_address=None, host="127.0.0.1")
        client = distributed.Client(cluster)
    start = time.perf_counter()
    with RSSSampler() as sampler:
        out = si.impute(spatial, reference, method=method, out=store, scheduler=client, block_size=args.block_size,
                        dtype=args.dtype, num_threads=args.threads)
    seconds = time.perf_counter() - start
    prov = out.uns["spatialimpute"]
    timings = prov["timings"]
    parts = [(name, timings.get(f"{name}_s", 0.0)) for name in ("train", "predict", "reliability")]
    # the call is construction (validation, normalisation) then training, prediction, reliability
    phase_rss = sampler.phase_peaks([("construct", seconds - sum(s for _, s in parts)), *parts])
    peak_rss = _rss_gb(peak=True)  # the call's, before the column is read back
    opened = time.perf_counter()
    column = np.asarray(read_lazy(store).X[:, out.n_vars // 2].compute())
    open_s = time.perf_counter() - opened
    if client is not None:
        client.close()
        cluster.close()
    return {"cells": n_cells, "method": method + (" (2-worker cluster)" if args.in_cluster else ""), "dtype": args.dtype,
            "genes": out.n_vars, "seconds": seconds, "train_s": prov["timings"].get("train_s", float("nan")),
            "predict_s": prov["timings"]["predict_s"], "reliability_s": prov["timings"].get("reliability_s", float("nan")),
            "blocks": prov["prediction"]["n_blocks"],
            "input_rss_gb": input_rss, "peak_rss_gb": peak_rss, "store_gb": _size_gb(store),
            "column_s": open_s, "column_cells": int(column.shape[0]), "phase_rss_gb": phase_rss,
            "weights": {name: round(m["weight"], 4) for name, m in prov.get("auto", {}).get("members", {}).items()
                        if m["weight"] > 0}}


def float16_loss(float32_store: str, float16_store: str) -> dict:
    """How far a float16 store is from the float32 one: absolute errors and per-gene agreement."""
    import dask.array as da
    import numpy as np

    from spatialimpute.io.zarr_store import read_lazy

    x32, x16 = read_lazy(float32_store).X, read_lazy(float16_store).X.astype(np.float32)
    diff = abs(x16 - x32)
    max_err, mean_err, mean_value = da.compute(diff.max(), diff.mean(), abs(x32).mean())
    genes = np.random.default_rng(0).choice(x32.shape[1], min(200, x32.shape[1]), replace=False)
    a, b = np.asarray(x32[:, np.sort(genes)]), np.asarray(x16[:, np.sort(genes)])
    keep = a.std(axis=0) > 0
    corr = [np.corrcoef(a[:, j], b[:, j])[0, 1] for j in np.flatnonzero(keep)]
    return {"max_abs_error": float(max_err), "mean_abs_error": float(mean_err),
            "mean_abs_value": float(mean_value), "min_gene_pearson": float(np.min(corr))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,300000,1000000", help="spatial cells, comma-separated")
    parser.add_argument("--methods", default="knn,stimpute", help="methods, comma-separated")
    parser.add_argument("--reference-cells", type=int, default=50_000)
    parser.add_argument("--genes", type=int, default=5_000, help="reference genes")
    parser.add_argument("--panel", type=int, default=300, help="spatial panel genes")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default %(default)s)")
    parser.add_argument("--block-size", type=int, default=None, help="cells per block (default: the library's)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    parser.add_argument("--schedulers", default="local",
                        help="comma-separated: local (the threaded scheduler), cluster (a 2-worker LocalCluster)")
    parser.add_argument("--float16-loss", action="store_true",
                        help="also write each float32 run as float16 and report the values' loss")
    parser.add_argument("--cell-order", default="simulated", choices=["simulated", "spatial"],
                        help="the cells as simulated (tiles in turn, no order within a tile) or sorted by "
                             "si.spatial_order (default %(default)s)")
    parser.add_argument("--workdir", default=None, help="where the stores go (default: a temporary folder)")
    parser.add_argument("--one", nargs=2, metavar=("CELLS", "METHOD"), help=argparse.SUPPRESS)
    parser.add_argument("--in-cluster", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    schedulers = args.schedulers.split(",")
    if not schedulers or not set(schedulers) <= {"local", "cluster"}:
        parser.error(f"--schedulers: local and/or cluster; found {args.schedulers!r}")
    if args.one:
        print(json.dumps(run_one(int(args.one[0]), args.one[1], args)))
        return 0
    rows, losses = [], []

    def run(n: int, method: str, dtype: str, in_cluster: bool) -> dict | None:
        cmd = [sys.executable, __file__, "--one", str(n), method, "--reference-cells", str(args.reference_cells),
               "--genes", str(args.genes), "--panel", str(args.panel), "--threads", str(args.threads),
               "--dtype", dtype, "--cell-order", args.cell_order, "--workdir", workdir]
        cmd += ["--block-size", str(args.block_size)] if args.block_size else []
        cmd += ["--in-cluster"] if in_cluster else []
        done = subprocess.run(cmd, check=False, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"{n} {method}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
            return None
        return json.loads(done.stdout.strip().splitlines()[-1])

    with tempfile.TemporaryDirectory(prefix="atlas_scale_") as tmp:
        workdir = args.workdir or tmp
        for n in [int(s) for s in args.sizes.split(",")]:
            for method in args.methods.split(","):
                for in_cluster in [s == "cluster" for s in schedulers]:
                    row = run(n, method, args.dtype, in_cluster)
                    rows += [row] if row else []
                if args.float16_loss and args.dtype == "float32" and "local" in schedulers:
                    half = run(n, method, "float16", False)
                    if half:
                        rows.append(half)
                        losses.append({"cells": n, "method": method, **float16_loss(
                            os.path.join(workdir, f"{method}_{n}_float32.zarr"),
                            os.path.join(workdir, f"{method}_{n}_float16.zarr"))})
    print("| cells | method | genes | blocks | seconds (train / predict / reliability) | input RSS GB "
          "| peak RSS GB (construct / train / predict / reliability) | store | store GB | one gene's column s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        phases = " / ".join(f"{r['phase_rss_gb'][k]:.2f}" for k in ("construct", "train", "predict", "reliability"))
        print(f"| {r['cells']:,} | {r['method']} | {r['genes']:,} | {r['blocks']} | {r['seconds']:.1f} "
              f"({r['train_s']:.1f} / {r['predict_s']:.1f} / {r['reliability_s']:.1f}) | {r['input_rss_gb']:.2f} "
              f"| {r['peak_rss_gb']:.2f} ({phases}) | {r['dtype']} | {r['store_gb']:.3f} | {r['column_s']:.3f} |")
    for r in rows:
        if r.get("weights"):
            print(f"\n{r['cells']:,} {r['method']}: members' weights {r['weights']}")
    if losses:
        print("\n| cells | method | float16 vs float32: max abs error | mean abs error | mean abs value "
              "| lowest per-gene Pearson (200 genes) |")
        print("|---|---|---|---|---|---|")
        for r in losses:
            print(f"| {r['cells']:,} | {r['method']} | {r['max_abs_error']:.2e} | {r['mean_abs_error']:.2e} "
                  f"| {r['mean_abs_value']:.3f} | {r['min_gene_pearson']:.6f} |")
    print(f"\n{args.threads} torch threads; reference {args.reference_cells:,} cells x {args.genes:,} genes, "
          f"panel {args.panel}; cells in {args.cell_order} order; machine: {os.cpu_count()} cores (state its load)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
