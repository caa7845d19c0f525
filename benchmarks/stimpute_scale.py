"""Scale benchmark for stImpute: simulated spatial data of growing size.

Each size runs in a fresh subprocess: simulate (300 panel genes + 50 reference-only target
genes, 30,000 reference cells), then impute the 50 target genes (panel extension) with
``StImpute`` and print wall time and the peak resident memory of the imputation (the
simulator's own peak is excluded; the resident size after simulation is printed beside
it). Memory must grow linearly in the number of spatial cells.

Usage::

    python benchmarks/stimpute_scale.py                 # 10k and 100k cells
    python benchmarks/stimpute_scale.py --sizes 10000 100000 1000000 --device cuda
    python benchmarks/stimpute_scale.py --sizes 10000 --param batch_cells=None

Timings depend on the machine: state cores/GPU and contention with the numbers.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from spatialimpute.benchmark.resources import ResourceMonitor, current_rss_bytes


def _current_rss_gib() -> float:
    return (current_rss_bytes() or float("nan")) / 2**30


def run_one(n_cells: int, n_reference: int, n_panel: int, n_targets: int, device: str, seed: int,
            params: dict) -> dict:
    """Simulate one size and impute it; returns timings and memory."""
    import torch

    from spatialimpute._settings import settings
    from spatialimpute.datasets import simulate_pair
    from spatialimpute.model.stimpute import StImpute

    settings.progress = False
    t0 = time.perf_counter()
    spatial, reference, truth = simulate_pair(
        n_spatial=n_cells, n_reference=n_reference, n_genes=n_panel + n_targets, n_panel=n_panel, seed=seed
    )
    truth_targets = truth[:, [g for g in truth.var_names if g not in set(spatial.var_names)]].X.copy()
    del truth
    sim_s = time.perf_counter() - t0
    base = _current_rss_gib()
    with ResourceMonitor(device) as monitor:  # peak RSS of the imputation only (not the simulator's)
        t1 = time.perf_counter()
        model = StImpute(spatial, reference, seed=seed, device=device, **params)
        out = model.impute()
        impute_s = time.perf_counter() - t1
    import numpy as np

    pred = out.X
    pcc = [np.corrcoef(pred[:, j], truth_targets[:, j])[0, 1] for j in range(pred.shape[1])]
    res = {
        "n_cells": n_cells,
        "n_reference": n_reference,
        "n_panel": n_panel,
        "n_targets": n_targets,
        "device": str(model.device),
        "threads": torch.get_num_threads(),
        "simulate_s": round(sim_s, 1),
        "impute_s": round(impute_s, 1),
        "train_s": round(model.timings.get("train_s", float("nan")), 1),
        "peak_rss_gib": round(monitor.peak_rss_bytes / 2**30, 2),
        "peak_rss_scope": monitor.peak_rss_scope,
        "rss_after_simulation_gib": round(base, 2),
        "effective_params": model.effective_params,
        "chunk_sizes": model.chunk_sizes,
        "mean_pcc_targets": round(float(np.nanmean(pcc)), 4),
    }
    if monitor.peak_gpu_bytes is not None:
        res["peak_gpu_gib"] = round(monitor.peak_gpu_bytes / 2**30, 2)
    return res


def _parse_params(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = None if value == "None" else value
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000],
                    help="spatial cell counts (default 10k 100k; add 1000000 for the largest)")
    ap.add_argument("--reference", type=int, default=30_000)
    ap.add_argument("--panel", type=int, default=300)
    ap.add_argument("--targets", type=int, default=50)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--param", action="append", default=[], help="StImpute parameter KEY=VALUE (JSON value)")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    params = _parse_params(args.param)
    if args.one:
        print(json.dumps(run_one(args.sizes[0], args.reference, args.panel, args.targets, args.device, args.seed, params)))
        return
    for n in args.sizes:
        cmd = [sys.executable, __file__, "--one", "--sizes", str(n), "--reference", str(args.reference),
               "--panel", str(args.panel), "--targets", str(args.targets), "--device", args.device,
               "--seed", str(args.seed)] + [f"--param={p}" for p in args.param]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{n} cells: FAILED\n{proc.stderr[-3000:]}", flush=True)
            continue
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"{n:>9} cells: impute {res['impute_s']:>8.1f} s (train {res['train_s']} s), peak RSS "
              f"{res['peak_rss_gib']} GiB (inputs {res['rss_after_simulation_gib']} GiB)"
              + (f", peak GPU {res['peak_gpu_gib']} GiB" if "peak_gpu_gib" in res else "")
              + f", target PCC {res['mean_pcc_targets']}", flush=True)
        print("   ", json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
