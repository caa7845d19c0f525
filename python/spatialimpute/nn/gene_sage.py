"""Gene-node GraphSAGE layers of stImpute (ALGORITHMS.md B.5).

Every (spatial cell, gene) pair carries a ``k``-vector: the gene's expression in the cell's
``k`` nearest reference cells, in distance-rank order. A layer mixes these vectors across
genes with a dense ``G x G`` aggregation matrix (the same for all cells and neighbour slots),
concatenates self and aggregated features, applies one weight ``W`` (``2k x k``) shared by
all genes and cells, a ReLU and an L2 normalisation over the ``k`` dimension.

Tensors use the layout ``(cells, k, genes)`` so that the gene mixing is one large matrix
product ``(cells * k, G) @ (G, G)``; the slot mixing is one product ``(cells * G, 2k) @ W``.
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

    def forward(self, h: torch.Tensor, agg_t: torch.Tensor) -> torch.Tensor:
        """Apply the layer.

        Parameters
        ----------
        h
            ``(cells, k, G)`` features.
        agg_t
            ``(G, G)`` *transposed* aggregation matrix ``A^T`` (so that ``h @ A^T`` gives
            ``a[c, j, g] = sum_g' A[g, g'] h[c, j, g']``).

        Returns
        -------
        torch.Tensor
            ``(cells, k, G)`` features, unit L2 norm (or zero) over ``k``.
        """
        c, k, g = h.shape
        a = torch.matmul(h, agg_t)  # (c, k, G): one GEMM over (c*k) rows
        hc = torch.cat([h, a], dim=1).transpose(1, 2)  # (c, G, 2k)
        out = torch.matmul(hc, self.weight)  # (c, G, k)
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

    def forward(self, h: torch.Tensor, agg_t: torch.Tensor) -> torch.Tensor:
        """Run all layers; returns ``(cells, G, k)`` (gene-major, ready for a per-pair head)."""
        for layer in self.layers:
            h = layer(h, agg_t)
        return h.transpose(1, 2)
