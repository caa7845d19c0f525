"""Cost benchmarks for STGNET.

``calls``: one ``si.impute(spatial, reference, method="stgnet", genes=heldout)`` call per
pair shape of issue 18 (spatial cells x panel genes, reference cells), simulated with the
project's simulator, raw counts in, a fifth of the panel held out, no cross-fold cache
(a user has none); prints the wall time of the call, the time of each stage and the
held-out SPCC against the simulator's truth.

``stages45``: stage 4 (inference) and stage 5 (multi-view GCN refinement) on a large
simulated tissue (default 100,000 cells; panel of 50 genes, 10 reference-only targets),
the GAN stages with a minimal schedule; prints time per stage, peak resident memory and
the SPCC of the targets. Stage 5 uses the sampled spatial regulariser above
``sr_exact_max_cells``; ``--sr-mode exact`` forces the exact blockwise one.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/stgnet_scale.py calls --threads 1
    python benchmarks/stgnet_scale.py stages45 --cells 20000 --sr-mode exact --device cuda

Timings depend on the machine: state cores, GPU and contention (``uptime``) with the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import time

#: (spatial cells, panel genes, reference cells) of the pairs timed in issue 18.
SHAPES = [(8425, 347, 4651), (645, 915, 9234), (2376, 244, 14249), (3089, 33, 5613), (1154, 42, 14231)]


def _spcc(pred, truth):
    import numpy as np
    from scipy.stats import spearmanr

    return float(np.nanmean([spearmanr(pred[:, j], truth[:, j])[0] for j in range(pred.shape[1])]))


def calls(args) -> None:
    import numpy as np
    import torch

    import spatialimpute as si
    from spatialimpute.datasets import simulate_pair
    from spatialimpute.model.stgnet import clear_reference_cache

    si.settings.progress = False
    shapes = SHAPES if not args.shape else [tuple(int(v) for v in s.split("x")) for s in args.shape]
    for n_cells, n_panel, n_ref in shapes:
        spatial, reference, truth = simulate_pair(n_spatial=n_cells, n_reference=n_ref, n_genes=n_panel + 50,
                                                  n_panel=n_panel, seed=0)
        rng = np.random.default_rng(0)
        held = list(rng.choice(spatial.var_names, size=n_panel // 5, replace=False))
        spatial = spatial[:, [g for g in spatial.var_names if g not in set(held)]].copy()
        clear_reference_cache()
        load = os.getloadavg()[0]
        start, cpu_start = time.perf_counter(), time.process_time()
        out = si.impute(spatial, reference, method="stgnet", genes=held, seed=0, device=args.device,
                        num_threads=args.threads)
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        timings = out.uns["spatialimpute"]["timings"]
        print(json.dumps({
            "shape": f"{n_cells}x{n_panel} ref {n_ref}", "call_s": round(seconds, 1), "cpu_s": round(cpu_seconds, 1),
            "stages_s": {k: round(v, 1) for k, v in timings.items()}, "heldout_spcc": round(_spcc(out.X, truth[:, held].X), 3),
            "torch_threads": torch.get_num_threads(), "load_before": round(load, 2), "load_after": round(os.getloadavg()[0], 2),
        }), flush=True)


def stages45(args) -> None:
    import torch

    import spatialimpute as si
    from spatialimpute.benchmark.resources import ResourceMonitor
    from spatialimpute.datasets import simulate_pair
    from spatialimpute.model.stgnet import STGNET

    if args.threads:
        torch.set_num_threads(args.threads)
    si.settings.progress = False
    spatial, reference, truth = simulate_pair(n_spatial=args.cells, n_reference=args.reference, n_genes=60,
                                              n_panel=50, seed=args.seed)
    targets = [g for g in truth.var_names if g not in set(spatial.var_names)]
    truth_t = truth[:, targets].X.copy()
    del truth
    model = STGNET(spatial, reference, seed=args.seed, device=args.device, s2_steps=200, s3_steps=200,
                   s2_panel_steps=200, refine=True, s5_epochs=args.s5_epochs, sr_mode=args.sr_mode, reliability=False)
    with ResourceMonitor(model.device) as monitor:
        model.train()
    pred = model.impute().X
    result = {
        "cells": args.cells, "targets": len(targets), "device": str(model.device),
        "torch_threads": torch.get_num_threads(), "stages_s": {k: round(v, 1) for k, v in model.timings.items()},
        "s5_epochs": args.s5_epochs, "sr_mode": model.schedule.sr_mode,
        "graphs": model.provenance()["stgnet"]["graphs"],
        "peak_rss_train_gib": round(monitor.peak_rss_bytes / 2**30, 2), "peak_rss_scope": monitor.peak_rss_scope,
        "target_spcc": round(_spcc(pred, truth_t), 3), "final_s5_loss": model.history["s5_total"][-1],
    }
    if model.device.type == "cuda":
        result["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated(model.device) / 2**30, 2)
    print(json.dumps(result, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_calls = sub.add_parser("calls", help="one si.impute call per pair shape")
    p_calls.add_argument("--shape", action="append", help="CELLSxPANELxREFERENCE (repeatable; default: issue 18's five)")
    p_calls.add_argument("--threads", type=int, default=1)
    p_calls.add_argument("--device", default="cpu")
    p_calls.set_defaults(run=calls)
    p_s = sub.add_parser("stages45", help="stages 4-5 on a large simulated tissue")
    p_s.add_argument("--cells", type=int, default=100_000)
    p_s.add_argument("--reference", type=int, default=3000)
    p_s.add_argument("--device", default="cpu")
    p_s.add_argument("--sr-mode", default="auto", choices=["auto", "exact", "sampled"])
    p_s.add_argument("--s5-epochs", type=int, default=101)
    p_s.add_argument("--threads", type=int, default=None)
    p_s.add_argument("--seed", type=int, default=0)
    p_s.set_defaults(run=stages45)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
