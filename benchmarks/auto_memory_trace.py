"""Where ``method="auto"`` spends its memory and time at atlas scale.

Builds the simulated pair of ``atlas_scale.py`` (reference 50,000 cells x 5,000 genes, panel
300), runs one ``si.impute(..., method="auto", out=STORE)`` and prints the process's RSS at
each step of the call (inner cross-validation, each final member's training, the members'
scans and scales, the reliability, each prediction block's scan), then the highest RSS
sampled (every 0.2 s) between consecutive steps.

Usage::

    OMP_NUM_THREADS=2 python benchmarks/auto_memory_trace.py --cells 20000 --cell-order spatial --out /tmp/auto.zarr
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import atlas_scale as A  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", type=int, default=20_000)
    parser.add_argument("--cell-order", default="spatial", choices=["simulated", "spatial"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", required=True, help="the zarr store to write (must not exist)")
    args = parser.parse_args()

    import torch

    import spatialimpute as si
    from spatialimpute.model import _base
    from spatialimpute.model.auto import model as auto_model

    torch.set_num_threads(args.threads)
    si.settings.progress = False
    spatial, reference = A.inputs(args.cells, 50_000, 5_000, 300, args.cell_order)
    marks, t0 = [], [time.perf_counter()]

    def mark(name: str) -> None:
        marks.append((time.perf_counter() - t0[0], name, A._rss_gb(peak=False)))
        print(f"{marks[-1][0]:8.1f} s {marks[-1][2]:6.2f} GB  {name}", flush=True)

    def traced(owner, attr: str, label) -> None:
        inner = getattr(owner, attr)

        def call(*a, **k):
            name = label(a) if callable(label) else label
            mark("start " + name)
            try:
                return inner(*a, **k)
            finally:
                mark("end " + name)
        setattr(owner, attr, call)

    traced(auto_model, "run_inner_cv", "inner cross-validation")
    traced(_base.BaseImputer, "train", lambda a: "training " + type(a[0]).__name__)
    for step in ("_fit_scales", "_fit_reliability", "_fit_residual_propagation", "_member_stats"):
        traced(auto_model.AutoImpute, step, step)
    print(f"input RSS {A._rss_gb(peak=False):.2f} GB", flush=True)
    A._reset_peak_rss()
    with A.RSSSampler() as sampler:
        t0[0] = time.perf_counter()
        out = si.impute(spatial, reference, method="auto", out=args.out, num_threads=args.threads)
    seconds = time.perf_counter() - t0[0]
    print(f"seconds {seconds:.1f}, timings {out.uns['spatialimpute']['timings']}, peak RSS {A._rss_gb(peak=True):.2f} GB")
    points = [(0.0, "start", 0.0)] + marks + [(seconds, "end", 0.0)]
    for (a, first, _), (b, second, _) in zip(points, points[1:]):
        inside = [rss for t, rss in sampler.samples if a <= t < b]
        if inside:
            print(f"{a:8.1f}-{b:8.1f} s  peak {max(inside):6.2f} GB  {first} -> {second}")
    members = out.uns["spatialimpute"]["auto"]["members"]
    print(json.dumps({name: {"weight": round(m["weight"], 4), "inner_spcc": round(m["inner_spcc"], 4)}
                      for name, m in members.items()}))


if __name__ == "__main__":
    main()
