"""Scale benchmark for STGNET: stage 4 (inference) and stage 5 (multi-view GCN refinement)
on a large simulated tissue.

Simulates ``--cells`` spatial cells (default 100,000; panel of 50 genes, 10 reference-only
target genes), trains the GAN stages with a minimal schedule (they are per-cell mini-batch
work whose cost is linear in cells and is not what this benchmark is about), then times
stage 4 and stage 5 separately and prints wall time, peak resident memory and the held-out
SPCC of the imputed target genes against the simulator's truth.

Stage 5 uses the sampled spatial regulariser above ``sr_exact_max_cells`` (20,000 by
default); ``--sr-mode exact`` forces the exact blockwise O(N^2) version.

Usage::

    python benchmarks/stgnet_scale.py                    # 100k cells, CPU
    python benchmarks/stgnet_scale.py --cells 20000 --sr-mode exact --device cuda

Timings depend on the machine: state cores/GPU and contention with the numbers.
"""

from __future__ import annotations

import argparse
import json
import time

from spatialimpute.benchmark.resources import ResourceMonitor, current_rss_bytes


def _current_rss_gib() -> float:
    return (current_rss_bytes() or float("nan")) / 2**30


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cells", type=int, default=100_000)
    parser.add_argument("--reference", type=int, default=3000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sr-mode", default="auto", choices=["auto", "exact", "sampled"])
    parser.add_argument("--s5-epochs", type=int, default=101)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import numpy as np
    import torch
    from scipy.stats import spearmanr

    from spatialimpute._settings import settings
    from spatialimpute.datasets import simulate_pair
    from spatialimpute.model.stgnet import STGNET

    if args.threads:
        torch.set_num_threads(args.threads)
    settings.progress = False
    t0 = time.perf_counter()
    spatial, reference, truth = simulate_pair(n_spatial=args.cells, n_reference=args.reference, n_genes=60,
                                              n_panel=50, seed=args.seed)
    targets = [g for g in truth.var_names if g not in set(spatial.var_names)]
    truth_t = truth[:, targets].X.copy()
    del truth
    sim_s = time.perf_counter() - t0
    base = _current_rss_gib()

    model = STGNET(spatial, reference, seed=args.seed, device=args.device, s1_epochs=1, s2_epochs=1, s3_epochs=1,
                   min_steps=200, s2_panel_steps=200, s5_epochs=args.s5_epochs, sr_mode=args.sr_mode, reliability=False)
    t1 = time.perf_counter()
    model._cfg = model._config()
    model._check_sizes()
    model._prepare()
    model._train_reference_stages()
    model._adapt_teachers_to_panel()
    images, inputs, gm, onehot, coords = model._spatial_tensors(model._feature_pos)
    model.G3, _ = model._train_g3(images, inputs, gm, onehot, coords, "")
    gan_s = time.perf_counter() - t1
    rss_before_s4 = _current_rss_gib()

    with ResourceMonitor(model.device) as monitor:  # peak RSS of stages 4-5 only (not the simulator's)
        t2 = time.perf_counter()
        s4 = model._stage4_output(model.G3, model.G2, images, inputs, gm, onehot, coords, "")
        s4_s = time.perf_counter() - t2
        t3 = time.perf_counter()
        _, mu, hist, info = model._stage5(s4, model._feature_pos, "")
        s5_s = time.perf_counter() - t3
    pred = model._final_targets(mu, model._target_pos)
    spcc = np.nanmean([spearmanr(pred[:, j], truth_t[:, j])[0] for j in range(pred.shape[1])])
    result = {
        "cells": args.cells, "targets": len(targets), "device": str(model.device),
        "torch_threads": torch.get_num_threads(), "simulate_s": round(sim_s, 1),
        "gan_stages_s (minimal schedule)": round(gan_s, 1), "stage4_s": round(s4_s, 1), "stage5_s": round(s5_s, 1),
        "s5_epochs": args.s5_epochs, "sr_mode": model._sr_mode(args.cells), "graphs": info,
        "rss_after_simulation_gib": round(base, 2), "rss_before_stage4_gib": round(rss_before_s4, 2),
        "peak_rss_stages_4_5_gib": round(monitor.peak_rss_bytes / 2**30, 2),
        "peak_rss_scope": monitor.peak_rss_scope, "target_spcc": round(float(spcc), 3),
        "final_s5_loss": hist["total"][-1] if hist else None,
    }
    if model.device.type == "cuda":
        result["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated(model.device) / 2**30, 2)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
