"""Gene-node GraphSAGE layers of stImpute (ALGORITHMS.md B.5).

Every (spatial cell, gene) pair carries a ``k``-vector: the gene's expression in the cell's
``k`` nearest reference cells, in distance-rank order. A layer mixes these vectors across
genes with a dense ``G x G`` aggregation matrix (the same for all cells and neighbour slots),
concatenates self and aggregated features, applies one weight ``W`` (``2k x k``) shared by
all genes and cells, a ReLU and an L2 normalisation over the ``k`` dimension.

Tensors use the layout ``(cells, k, genes)`` so that the gene mixing is one large matrix
product ``(cells * k, G) @ (G, G)``; the slot mixing ``[h, a] @ W`` is computed as
``h @ W[:k] + a @ W[k:]`` (no concatenated copy). The first layer's gene mixing is linear in
the gathered reference rows, so callers may pass it precomputed: ``(R @ A^T)[idx]`` equals
``R[idx] @ A^T`` and costs a gather instead of the largest matrix product.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["GeneSAGELayer", "GeneSAGE"]


class GeneSAGELayer(nn.Module):
    """One GraphSAGE layer over the gene graph.

    Parameters
    ----------
    k
        Feature width (number of neighbour slots). ``W`` has shape ``(2k, k)``.
    """

    def __init__(self, k: int) -> None:
        super().__init__()
        if int(k) < 1:
            raise ValueError(f"k: expected a positive integer, found {k!r}.")
        self.k = int(k)
        self.weight = nn.Parameter(torch.empty(2 * self.k, self.k))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming-uniform on ``W`` as stored; torch takes the fan from dimension 1 (``k``)."""
        nn.init.kaiming_uniform_(self.weight, a=0.0)

    def forward(self, h: torch.Tensor, agg_t: torch.Tensor, a: torch.Tensor | None = None) -> torch.Tensor:
        """Apply the layer.

        Parameters
        ----------
        h
            ``(cells, k, G)`` features.
        agg_t
            ``(G, G)`` *transposed* aggregation matrix ``A^T`` (so that ``h @ A^T`` gives
            ``a[c, j, g] = sum_g' A[g, g'] h[c, j, g']``).
        a
            Optional precomputed ``h @ agg_t`` (same shape as ``h``).

        Returns
        -------
        torch.Tensor
            ``(cells, k, G)`` features, unit L2 norm (or zero) over ``k``.
        """
        if a is None:
            a = torch.matmul(h, agg_t)  # (c, k, G): one GEMM over (c*k) rows
        out = torch.matmul(h.transpose(1, 2), self.weight[: self.k])
        out = out + torch.matmul(a.transpose(1, 2), self.weight[self.k:])  # (c, G, k)
        out = F.normalize(F.relu(out), p=2.0, dim=-1, eps=1e-12)
        return out.transpose(1, 2)  # (c, k, G)


class GeneSAGE(nn.Module):
    """A stack of :class:`GeneSAGELayer` (stImpute uses two).

    Parameters
    ----------
    k
        Number of neighbour slots.
    n_layers
        Number of layers.
    """

    def __init__(self, k: int, n_layers: int = 2) -> None:
        super().__init__()
        if int(n_layers) < 1:
            raise ValueError(f"n_layers: expected >= 1, found {n_layers!r}.")
        self.layers = nn.ModuleList([GeneSAGELayer(k) for _ in range(int(n_layers))])

    def forward(self, h: torch.Tensor, agg_t: torch.Tensor, a0: torch.Tensor | None = None) -> torch.Tensor:
        """Run all layers; returns ``(cells, G, k)`` (gene-major, ready for a per-pair head).

        ``a0`` is the optional precomputed first-layer aggregation ``h @ agg_t``.
        """
        for i, layer in enumerate(self.layers):
            h = layer(h, agg_t, a0 if i == 0 else None)
        return h.transpose(1, 2)
