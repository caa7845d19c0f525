#!/usr/bin/env bash
# Run the BENCHMARK.md protocol (5-fold leave-genes-out CV) on the four shared paired datasets.
#
# Usage: benchmarks/run_shared.sh [METHODS] [OUT_ROOT] [extra `spatialimpute benchmark` options...]
#   METHODS   comma-separated methods (default: knn)
#   OUT_ROOT  output root; one sub-directory per dataset (default: benchmark_results)
# Environment: SPATIALIMPUTE_DATA_DIR (default ../shared/data relative to the repository),
#              PYTHON (default .venv/bin/python of the repository, else python3).
# Prints each pair's markdown summary and a final table of mean SPCC/PCC/SSIM/RMSE/JS and time.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
methods="${1:-knn}"
out_root="${2:-benchmark_results}"
shift $(( $# > 2 ? 2 : $# )) || true
python="${PYTHON:-$repo/.venv/bin/python}"
[ -x "$python" ] || python="python3"
export SPATIALIMPUTE_DATA_DIR="${SPATIALIMPUTE_DATA_DIR:-$repo/../shared/data}"

datasets=(osmfish_somatosensory seqfish_mouse_gastrulation fish_drosophila_embryo seqfish_mouse_embryo)
for name in "${datasets[@]}"; do
    echo "=== $name ($methods) ==="
    "$python" -m spatialimpute.cli --no-progress benchmark --dataset "$name" --methods "$methods" \
        --out "$out_root/$name" "$@"
done

"$python" - "$out_root" "${datasets[@]}" <<'PY'
import json, sys
from pathlib import Path

root, names = Path(sys.argv[1]), sys.argv[2:]
cols = ["spcc", "pcc", "ssim", "rmse", "js"]
print("\n| dataset | method | " + " | ".join(c.upper() for c in cols) + " | time (s) | peak RSS (MiB) |")
print("|" + "---|" * (len(cols) + 4))
for name in names:
    summary = json.loads((root / name / "summary.json").read_text())
    for method, m in summary["methods"].items():
        vals = " | ".join(f"{m['gene_metrics'][c]['mean']:.3f}" for c in cols)
        cost = m["cost"]
        print(f"| {name} | {method} | {vals} | {cost['total_wall_s']:.1f} | {cost['peak_rss_mib']:.0f} |")
PY
