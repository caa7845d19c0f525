"""Time one user call of each method, as a user makes it, on the pair shapes users bring.

Every call runs in a fresh Python process (no cross-fold caches) on fold 0 of the benchmark
protocol. The one-time cost a fresh process pays when it builds its first torch optimiser
(torch imports its compiler, several seconds) is timed separately, before the call, and
printed in its own column: a user pays it once per session, not per call. the spatial data keep the training genes of
fold 0 (raw counts, full-panel library size), the held-out genes are imputed. Shapes are
simulated with the project's simulator (spatial cells x panel genes, reference cells), plus
the four shared pairs when ``../shared/data`` (or ``$SPATIALIMPUTE_DATA_DIR``) has them. The
kNN baseline is timed in the same run as the yardstick. Prints one markdown table: seconds
per call (and the fold-0 SPCC of the held-out genes) for each method and thread count.

Usage::

    python benchmarks/member_speed.py                        # every shape, knn/stimpute/stgnet, 1 and 2 threads
    python benchmarks/member_speed.py --methods stimpute --threads 1 --shapes 645x915:9234
    python benchmarks/member_speed.py --large                # 25k/50k/100k x 1,000 panel, ref 30k: stImpute, 2 threads
    python benchmarks/member_speed.py --methods stimpute --shapes 645x915:9234 --param gnn_steps=50

State the machine's load with the numbers: two cores shared with anything else give other times.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

#: (spatial cells, panel genes, reference cells) of pairs users bring (issue 18's table).
SHAPES = ["8425x347:4651", "645x915:9234", "2376x244:14249", "3089x33:5613", "1154x42:14231"]
SHARED = ["osmfish_somatosensory", "seqfish_mouse_gastrulation", "fish_drosophila_embryo", "seqfish_mouse_embryo"]
#: Spatial cells of the large-panel scale run (x 1,000 panel genes, reference 30,000 cells).
LARGE_CELLS = (25_000, 50_000, 100_000)


def _load(shape: str):
    """``(spatial, reference)`` of a shared pair name or a simulated ``CELLSxPANEL:REFERENCE`` shape."""
    if ":" not in shape:
        from spatialimpute.benchmark import load_dataset

        return load_dataset(shape)
    from spatialimpute.datasets import simulate_pair

    cells, rest = shape.split("x")
    panel, n_reference = rest.split(":")
    spatial, reference, _ = simulate_pair(n_spatial=int(cells), n_reference=int(n_reference),
                                          n_genes=int(panel) + 50, n_panel=int(panel), seed=0)
    return spatial, reference


def _fold0(spatial, reference):
    """Fold 0 of the protocol: training-gene spatial AnnData (library size in obs) and held-out genes."""
    import numpy as np
    import scipy.sparse as sp

    from spatialimpute.benchmark.cv import LIBRARY_SIZE_KEY, make_gene_folds

    shared = sorted(set(spatial.var_names.astype(str)) & set(reference.var_names.astype(str)))
    heldout = make_gene_folds(shared, 5, random_state=0)[0]
    train = [g for g in spatial.var_names.astype(str) if g not in set(heldout)]
    counts = spatial.X
    library = np.asarray(counts.sum(axis=1)).ravel()
    fold = spatial[:, train].copy()
    fold.obs[LIBRARY_SIZE_KEY] = library
    truth = spatial[:, heldout].X
    truth = truth.toarray() if sp.issparse(truth) else np.asarray(truth)
    truth = np.log1p(truth / library[:, None] * np.median(library))
    return fold, heldout, truth


def run_one(shape: str, method: str, threads: int, params: dict) -> dict:
    """One call in this process; returns seconds, peak RSS and the fold-0 SPCC."""
    import numpy as np
    import torch
    from scipy.stats import spearmanr

    torch.set_num_threads(threads)
    import spatialimpute as si
    from spatialimpute.benchmark.cv import LIBRARY_SIZE_KEY
    from spatialimpute.benchmark.resources import ResourceMonitor

    si.settings.progress = False
    start = time.perf_counter()
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # the one-time import, timed apart
    import_s = time.perf_counter() - start
    spatial, reference = _load(shape)
    fold, heldout, truth = _fold0(spatial, reference)
    with ResourceMonitor("cpu") as monitor:
        start = time.perf_counter()
        out = si.impute(fold, reference, method=method, genes=heldout, seed=0, device="cpu",
                        library_size_key=LIBRARY_SIZE_KEY, num_threads=threads, **params)
        seconds = time.perf_counter() - start
    pred = out[:, heldout].X
    rho = [spearmanr(pred[:, j], truth[:, j])[0] for j in range(len(heldout))]
    return {"seconds": seconds, "import_s": import_s, "peak_rss_mib": monitor.as_dict().get("peak_rss_mib"),
            "spcc": float(np.nanmean(rho)), "n_heldout": len(heldout)}


def _subprocess(shape: str, method: str, threads: int, params: dict) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    cmd = [sys.executable, __file__, "--one", shape, method, str(threads), "--params", json.dumps(params)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default="knn,stimpute,stgnet")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--shapes", default=None, help="comma-separated CELLSxPANEL:REFERENCE shapes or shared pair names")
    ap.add_argument("--large", action="store_true",
                    help="stImpute on 2 threads, 1,000 panel genes, 30,000 reference cells, "
                         f"{', '.join(str(n) for n in LARGE_CELLS)} spatial cells (time and peak RSS against cells)")
    ap.add_argument("--param", action="append", default=[], metavar="KEY=JSON",
                    help="an option passed to every call, e.g. --param gnn_steps=50")
    ap.add_argument("--one", nargs=3, metavar=("SHAPE", "METHOD", "THREADS"), help=argparse.SUPPRESS)
    ap.add_argument("--params", default="{}", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        shape, method, threads = args.one
        print(json.dumps(run_one(shape, method, int(threads), json.loads(args.params))))
        return
    params = {}
    for item in args.param:
        key, _, value = item.partition("=")
        params[key] = json.loads(value)
    if args.large:
        shapes, methods, thread_counts = [f"{n}x1000:30000" for n in LARGE_CELLS], ["stimpute"], [2]
    else:
        from spatialimpute.benchmark.shared_data import list_datasets

        shapes = args.shapes.split(",") if args.shapes else SHAPES + [d for d in SHARED if d in _available(list_datasets)]
        methods, thread_counts = args.methods.split(","), [int(t) for t in args.threads.split(",")]
    print(f"# one call per cell, fresh process, fold 0; options {params or 'default'}; machine: "
          f"{os.cpu_count()} cores, load average at start {os.getloadavg()[0]:.2f}", flush=True)
    header = "| pair (cells x panel : reference) | threads | " + " | ".join(f"{m} s (SPCC)" for m in methods)
    print(header + " | one-time import s |\n|" + "---|" * (len(methods) + 3), flush=True)
    for shape in shapes:
        for threads in thread_counts:
            cells, imports = [], []
            for method in methods:
                r = _subprocess(shape, method, threads, params)
                cells.append(f"error: {r['error']}" if "error" in r else f"{r['seconds']:.1f} ({r['spcc']:.3f})")
                if "error" not in r:
                    imports.append(r["import_s"])
                    if args.large:
                        cells[-1] += f", peak RSS {r['peak_rss_mib']:.0f} MiB"
            first = f"{max(imports):.1f}" if imports else "-"
            print(f"| {shape} | {threads} | " + " | ".join(cells) + f" | {first} |", flush=True)


def _available(list_datasets) -> list[str]:
    try:
        return list_datasets()
    except Exception:  # no shared data: simulated shapes only
        return []


if __name__ == "__main__":
    main()
