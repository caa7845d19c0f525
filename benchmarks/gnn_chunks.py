"""Time of stImpute's GNN forward pass per cell, by the number of cells per chunk.

One chunk of :func:`~spatialimpute.module.stimpute.gnn_forward_chunked` (the prediction path:
the first layer's aggregation expanded from the reference's kept projection; random weights and
data: ``k`` neighbour slots, ``genes`` graph genes of which all but the panel are predicted,
a low-rank gene mixing) on chunks of each size, a few repeats, milliseconds per cell. Chunks
whose largest tensor lies above glibc's mmap threshold (32 MiB at most) map fresh pages on
every chunk; compare with ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TOP_PAD_`` raised.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/gnn_chunks.py --threads 1 --chunks 25,50,100
"""

from __future__ import annotations

import argparse
import time


def main(argv=None) -> int:
    import torch

    from spatialimpute.module.stimpute import StImputeGNN, gnn_forward_chunked
    from spatialimpute.nn.gene_sage import GeneMixing

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--chunks", default="25,50,100", help="cells per chunk, comma-separated")
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--genes", type=int, default=5000)
    parser.add_argument("--panel", type=int, default=300)
    parser.add_argument("--rank", type=int, default=64, help="rank of the gene mixing")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    g, k = args.genes, args.k
    gnn = StImputeGNN(k, args.hidden).eval()
    reference = torch.rand(5000, g)
    mixing = GeneMixing(diagonal=torch.rand(g), left=torch.rand(g, args.rank), right=torch.rand(g, args.rank))
    projection = mixing.project(reference)
    out_genes = torch.arange(args.panel, g)
    print("| cells per chunk | largest tensor MiB | ms per cell |")
    print("|---|---|---|")
    for chunk in [int(c) for c in args.chunks.split(",")]:
        idx = torch.randint(0, reference.shape[0], (chunk, k))
        with torch.no_grad():
            gnn_forward_chunked(gnn, reference, idx, mixing, chunk, out_genes, projection)  # warm-up
            start = time.perf_counter()
            for _ in range(args.repeats):
                gnn_forward_chunked(gnn, reference, idx, mixing, chunk, out_genes, projection)
            per_cell = (time.perf_counter() - start) / args.repeats / chunk * 1e3
        largest = 4 * chunk * g * max(k, 2 * args.hidden) / 2**20
        print(f"| {chunk} | {largest:.1f} | {per_cell:.2f} |")
    print(f"\n{args.threads} torch threads; k {k}, hidden {args.hidden}, {g} genes ({g - args.panel} predicted), "
          f"mixing rank {args.rank}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
