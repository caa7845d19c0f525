"""How many cells' member predictions each ``auto`` block needs, by cell order.

``auto`` predicts a block from its members' rows of the block's cells and of their spatial
neighbours (smoothing and interval spread). This counts those rows per block for the
atlas benchmark's simulated cells (``benchmarks/atlas_scale.py``: tiles of up to 20,000
cells, no order within a tile) as simulated and sorted by ``si.spatial_order``; the total
over blocks divided by the cells is the factor by which the members' prediction work is
repeated. Counting only: nothing is trained.

Usage::

    python benchmarks/auto_block_rows.py --cells 20000 --targets 4700
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", type=int, default=20_000)
    parser.add_argument("--targets", type=int, default=4_700, help="imputed genes (they set the default block size)")
    parser.add_argument("--smoothing", default="15,30", help="smoothing neighbourhood sizes, comma-separated")
    args = parser.parse_args(argv)

    import spatialimpute as si
    from atlas_scale import simulate
    from spatialimpute.data.spatial_graph import section_knn
    from spatialimpute.model._blocks import default_block_size
    from spatialimpute.model.auto.model import SPREAD_NEIGHBORS

    spatial, _ = simulate(args.cells, 100, 400, 300)
    coords, sections = spatial.obsm["spatial"], np.zeros(spatial.n_obs, dtype=np.int64)
    block = default_block_size(spatial.n_obs, args.targets)
    print(f"{spatial.n_obs:,} cells in blocks of {block:,}; interval spread over {SPREAD_NEIGHBORS} neighbours")
    print("| cell order | smoothing neighbours | rows per block | rows / cells |")
    print("|---|---|---|---|")
    for name, order in (("simulated", np.arange(spatial.n_obs)), ("si.spatial_order", si.spatial_order(coords))):
        xy = coords[order]
        spread = section_knn(xy, SPREAD_NEIGHBORS, sections)
        for k in (int(v) for v in args.smoothing.split(",")):
            smooth = section_knn(xy, k, sections)
            rows = [np.unique(np.concatenate([np.arange(s, min(s + block, len(xy))), smooth[s:s + block].ravel(),
                                              spread[s:s + block].ravel()])).size for s in range(0, len(xy), block)]
            print(f"| {name} | {k} | {', '.join(f'{r:,}' for r in rows)} | {sum(rows) / len(xy):.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
