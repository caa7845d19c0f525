"""stImpute variants on the shared real pairs with the project's CV protocol (BENCHMARK.md).

Runs ``spatialimpute.benchmark.cross_validate`` once per configuration and prints one line
per configuration (mean SPCC/PCC/SSIM/RMSE/JS/CSS, clustering agreement, reliability
calibration, wall time, peak memory); ``--out`` also writes the summaries as JSON.

Usage::

    python benchmarks/stimpute_cv.py osmfish_somatosensory --config knn --config stimpute \\
        --config 'stimpute:{"gene_embeddings": "../shared/data/embeddings/osmfish_zeisel_esm2_t36_3B.csv.gz"}'

A configuration is ``METHOD`` or ``METHOD:JSON-PARAMS``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def _line(label: str, res, method: str) -> str:
    g = res.gene_scores[method]
    vals = " ".join(f"{k.upper()} {g[c].mean():.4f}" for k, c in
                    [("spcc", "spcc"), ("pcc", "pcc"), ("ssim", "ssim"), ("rmse", "rmse"), ("js", "js"), ("css", "css_gene")])
    cl = res.clustering.get(method, {}) if res.clustering else {}
    cl_txt = " ".join(f"{k}={v:.3f}" for k, v in _flat(cl).items() if isinstance(v, float))
    cal = res.calibration.get(method, {})
    cal_txt = " ".join(f"{k}={v:.3f}" for k, v in cal.items() if isinstance(v, float))
    cost = res.cost[method]
    return (f"{label}: {vals} | clustering {cl_txt or '-'} | calibration {cal_txt or '-'} | "
            f"wall {cost['total_wall_s']:.1f} s, peak RSS {cost.get('peak_rss_mib', float('nan')):.0f} MiB")


def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset")
    ap.add_argument("--config", action="append", required=True)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-clustering", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    from spatialimpute._settings import settings
    from spatialimpute.benchmark import cross_validate, load_dataset

    settings.progress = False
    spatial, reference = load_dataset(args.dataset)
    summaries = {}
    for cfg in args.config:
        method, _, raw = cfg.partition(":")
        params = json.loads(raw) if raw else {}
        t = time.perf_counter()
        res = cross_validate(spatial, reference, methods=[method], device=args.device,
                             method_params={method: params} if params else None,
                             clustering=not args.no_clustering, dataset=args.dataset)
        print(_line(f"{args.dataset} {cfg}", res, method) + f" (call {time.perf_counter() - t:.1f} s)", flush=True)
        summaries[cfg] = res.to_dict()
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / f".{args.dataset}.json.tmp"
        tmp.write_text(json.dumps(summaries, indent=1, default=str))
        tmp.replace(out / f"{args.dataset}.json")


if __name__ == "__main__":
    main()
