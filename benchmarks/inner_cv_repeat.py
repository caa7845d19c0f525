"""Is ``method="auto"``'s inner cross-validation reproducible?

Runs the inner cross-validation (3 folds over the panel genes) on one simulated pair several
times, with a given number of worker processes each time, and prints for every candidate the
largest difference of its held-out predictions from the first run's (0.0: reproducible).
Extra ``stgnet.OPTION=VALUE`` arguments shorten STGNET's schedule.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/inner_cv_repeat.py --members stgnet --workers 2,2,1 \\
        stgnet.s2_steps=40 stgnet.s2_panel_steps=20 stgnet.s3_steps=40
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", default="knn,mapping,stimpute,stgnet")
    parser.add_argument("--workers", default="2,2,1", help="worker processes of each run, comma-separated")
    parser.add_argument("--cells", type=int, default=800)
    parser.add_argument("--reference-cells", type=int, default=2000)
    parser.add_argument("stgnet_options", nargs="*", metavar="stgnet.OPTION=VALUE")
    args = parser.parse_args()

    import numpy as np

    import spatialimpute as si
    from spatialimpute.datasets import simulate_pair
    from spatialimpute.model.auto.config import Candidate, candidates
    from spatialimpute.model.auto.inner_cv import run_inner_cv

    si.settings.progress = False
    options = tuple((k.removeprefix("stgnet."), int(v)) for k, v in (o.split("=") for o in args.stgnet_options))
    spatial, reference, _ = simulate_pair(n_spatial=args.cells, n_reference=args.reference_cells, n_genes=60,
                                          n_panel=30, seed=0)
    model = si.AutoImpute(spatial, reference, members=args.members.split(","), num_threads=1)
    chosen = [Candidate(c.name, c.method, options) if c.method == "stgnet" else c
              for c in candidates(model.architecture)]
    runs = []
    for workers in (int(w) for w in args.workers.split(",")):
        start = time.perf_counter()
        heldout = run_inner_cv(model.paired, chosen, n_folds=3, max_cells=10_000, seed=0, device=model.device,
                               num_threads=1, workers=workers)
        print(f"run {len(runs)}: {workers} worker(s), {time.perf_counter() - start:.1f} s", flush=True)
        runs.append(heldout.predictions)
    for name, first in runs[0].items():
        diffs = [float(np.abs(run[name] - first).max()) for run in runs[1:]]
        print(f"{name}: largest difference from run 0 in runs 1..: {diffs}")


if __name__ == "__main__":
    main()
