"""stImpute's networks and losses as pure torch (docs/algorithms/stimpute.md).

Tensors in, tensors/losses out: no AnnData, no I/O, no training schedule (that lives in
:mod:`spatialimpute.model.stimpute`).

Memory layout: the neighbour tensor of the original (``(cells * k) x genes``) is never
built. A forward pass receives the neighbour *indices* ``(cells, k)`` and the reference
matrix restricted to the needed genes ``(n_reference, G)``, and gathers one chunk of cells at
a time: ``reference[idx[chunk]] -> (chunk, k, G)`` (distance-rank order kept).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.gene_sage import GeneMixing, GeneSAGE
from ..nn.mlp import MLP

__all__ = [
    "StImputeAE",
    "StImputeGNN",
    "ReliabilityMLP",
    "stimpute_loss",
    "gnn_forward_chunked",
    "gnn_loss_and_backward",
    "weighted_knn_mean",
    "final_blend",
    "uncentred_cosine_columns",
]


class StImputeAE(nn.Module):
    """Autoencoder ``x -> ReLU(Linear(G, latent)) -> ReLU(Linear(latent, G))``."""

    def __init__(self, n_genes: int, latent: int = 100) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(n_genes, latent), nn.ReLU())
        self.decoder = nn.Sequential(nn.Linear(latent, n_genes), nn.ReLU())

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latent representation ``(n, latent)``."""
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction ``(n, G)``."""
        return self.decoder(self.encoder(x))


class StImputeGNN(nn.Module):
    """Gene-node GraphSAGE (two layers over ``k`` slots) + MLP head ``k -> 2h -> h -> 1`` ("Network").

    Parameters
    ----------
    k
        Neighbours per cell.
    hidden
        ``h`` of the head.
    n_layers
        GraphSAGE layers (2 in stImpute).
    """

    def __init__(self, k: int, hidden: int, n_layers: int = 2) -> None:
        super().__init__()
        self.k = int(k)
        self.sage = GeneSAGE(self.k, n_layers)
        self.head = MLP((self.k, 2 * int(hidden), int(hidden), 1))

    def forward(self, h0: torch.Tensor, mixing: GeneMixing, a0: torch.Tensor | None = None,
                out_genes: torch.Tensor | None = None) -> torch.Tensor:
        """Predict ``(cells, G_out)`` from neighbour expression ``h0`` of shape ``(cells, k, G)``.

        ``mixing`` is the gene aggregation; ``a0`` the optional precomputed ``mixing(h0)``;
        ``out_genes`` the genes to predict (``None``: all ``G``).
        """
        z = self.sage(h0, mixing, a0, out_genes)  # (cells, G_out, k)
        return self.head(z).squeeze(-1)


class ReliabilityMLP(MLP):
    """Per-gene accuracy predictor ``n_cells -> 2h -> h -> 1`` ("Reliability")."""

    def __init__(self, n_inputs: int, hidden: int) -> None:
        super().__init__((int(n_inputs), 2 * int(hidden), int(hidden), 1))


def _cos_rows(a: torch.Tensor, b: torch.Tensor, dim: int) -> torch.Tensor:
    """Cosine along ``dim``; a zero vector gives 0 (as 1 - scipy's NaN would be undefined)."""
    num = (a * b).sum(dim)
    den = a.norm(dim=dim) * b.norm(dim=dim)
    return torch.where(den > 0, num / den.clamp_min(1e-30), torch.zeros_like(num))


def stimpute_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``2 (L_cell + L_gene) + MSE`` with global-mean centring ("Loss and schedule").

    Parameters
    ----------
    pred, target
        ``(cells, G)``. ``pred``'s global mean is part of the graph (gradients flow through
        it), exactly as in a full-batch step of the original.
    """
    pc = pred - pred.mean()
    tc = target - target.mean()
    l_cell = 1.0 - _cos_rows(pc, tc, 1).mean()
    l_gene = 1.0 - _cos_rows(pc, tc, 0).mean()
    return 2.0 * (l_cell + l_gene) + F.mse_loss(pred, target)


def _chunks(n: int, size: int):
    size = max(1, int(size))
    for s in range(0, n, size):
        yield s, min(n, s + size)


def _run(gnn: StImputeGNN, reference: torch.Tensor, reference_projection: torch.Tensor, idx: torch.Tensor,
         mixing: GeneMixing, out_genes: torch.Tensor | None = None) -> torch.Tensor:
    """GNN on the cells of ``idx``, gathering the neighbours and their first-layer aggregation
    (expanded from the neighbours' rows of ``reference_projection = mixing.project(reference)``)."""
    h0 = reference[idx]
    return gnn(h0, mixing, mixing.expand(reference_projection[idx], h0), out_genes)


def gnn_forward_chunked(
    gnn: StImputeGNN,
    reference: torch.Tensor,
    idx: torch.Tensor,
    mixing: GeneMixing,
    chunk_size: int,
    out_genes: torch.Tensor | None = None,
    reference_projection: torch.Tensor | None = None,
) -> torch.Tensor:
    """GNN predictions for all cells, chunk by chunk, gathering neighbours on the fly.

    Parameters
    ----------
    gnn
        The network (its mode and grad state are the caller's business).
    reference
        ``(n_reference, G)`` reference expression of the graph's genes.
    idx
        ``(cells, k)`` int64 neighbour indices (distance order).
    mixing
        The gene aggregation.
    chunk_size
        Cells per chunk.
    out_genes
        Columns of ``reference`` to predict (``None``: all).
    reference_projection
        ``mixing.project(reference)`` when the caller keeps it (computed here otherwise).

    Returns
    -------
    torch.Tensor
        ``(cells, G_out)`` predictions.
    """
    n = idx.shape[0]
    n_out = reference.shape[1] if out_genes is None else int(out_genes.numel())
    out = torch.empty(n, n_out, device=reference.device, dtype=reference.dtype)
    if reference_projection is None:
        reference_projection = mixing.project(reference)
    for s, e in _chunks(n, chunk_size):
        out[s:e] = _run(gnn, reference, reference_projection, idx[s:e], mixing, out_genes)
    return out


def gnn_loss_and_backward(
    gnn: StImputeGNN,
    reference: torch.Tensor,
    idx: torch.Tensor,
    target: torch.Tensor,
    mixing: GeneMixing,
    chunk_size: int,
) -> float:
    """Full-batch loss and *exact* full-batch gradients, accumulated over cell chunks.

    With one chunk this is a plain forward/backward. With several, a first no-grad pass
    computes all predictions; the loss (with its global means and per-gene sums) is
    differentiated with respect to the prediction matrix; a second pass recomputes each
    chunk with gradients and back-propagates that chunk's slice of ``dL/dpred``. The
    parameter gradients are then identical (up to float rounding) to one full-batch step.

    Returns
    -------
    float
        The loss value.
    """
    n = idx.shape[0]
    reference_projection = mixing.project(reference)
    if chunk_size >= n:
        loss = stimpute_loss(_run(gnn, reference, reference_projection, idx, mixing), target)
        loss.backward()
        return float(loss.detach())
    with torch.no_grad():
        pred = torch.cat([_run(gnn, reference, reference_projection, idx[s:e], mixing)
                          for s, e in _chunks(n, chunk_size)])
    pred.requires_grad_(True)
    loss = stimpute_loss(pred, target)
    (grad,) = torch.autograd.grad(loss, pred)
    for s, e in _chunks(n, chunk_size):
        _run(gnn, reference, reference_projection, idx[s:e], mixing).backward(grad[s:e])
    return float(loss.detach())


def weighted_knn_mean(
    reference: torch.Tensor,
    idx: torch.Tensor,
    dist: torch.Tensor,
    chunk_size: int = 65536,
) -> torch.Tensor:
    """stPlus-style distance-weighted mean of the neighbours' expression ("Prediction", guarded).

    Neighbours with cosine distance ``< 1`` are kept; weights
    ``w_j = (1 - d_j / sum_kept d) / (n_kept - 1)`` (sum to 1). Guards: one kept neighbour
    gets weight 1; all kept distances zero -> uniform over kept; no kept neighbour -> uniform
    over all ``k``.

    Parameters
    ----------
    reference
        ``(n_reference, G)`` expression of the genes to average.
    idx, dist
        ``(cells, k)`` neighbour indices and cosine distances.

    Returns
    -------
    torch.Tensor
        ``(cells, G)``.
    """
    n, k = idx.shape
    out = torch.empty(n, reference.shape[1], device=reference.device, dtype=reference.dtype)
    for s, e in _chunks(n, chunk_size):
        d = dist[s:e].to(reference.dtype)
        keep = d < 1.0
        nk = keep.sum(1, keepdim=True)
        dk = torch.where(keep, d, torch.zeros_like(d))
        tot = dk.sum(1, keepdim=True)
        w = (1.0 - dk / tot.clamp_min(1e-30)) / (nk - 1).clamp_min(1)
        w = torch.where(keep, w, torch.zeros_like(w))
        uni_kept = keep.to(d.dtype) / nk.clamp_min(1)
        w = torch.where((nk == 1) | (tot <= 0), uni_kept, w)
        w = torch.where(nk == 0, torch.full_like(w, 1.0 / k), w)
        out[s:e] = torch.einsum("ck,ckg->cg", w, reference[idx[s:e]])
    return out


def blend_statistics(gnn_pred: torch.Tensor, knn_mean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The global maxima :func:`final_blend` rescales with: ``(max of gnn_pred, max of each knn_mean column)``.

    Maxima of blocks of cells combine by ``max``, so the blend of a block can use the
    statistics of all cells.
    """
    gmax = gnn_pred.max() if gnn_pred.numel() else gnn_pred.new_tensor(0.0)
    return gmax, knn_mean.max(dim=0).values


def final_blend(gnn_pred: torch.Tensor, knn_mean: torch.Tensor, alpha: float,
                stats: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """``alpha * GNN + (1 - alpha) * kNN-mean rescaled to the GNN's global max`` ("Prediction").

    Each kNN-mean column is divided by its own max and multiplied by the max over all GNN
    predictions of the target genes; an all-zero (or non-positive) column contributes 0.
    ``stats``: :func:`blend_statistics` of all cells when ``gnn_pred`` and ``knn_mean`` are
    a block of them (default: of the inputs themselves).
    """
    gmax, cmax = blend_statistics(gnn_pred, knn_mean) if stats is None else stats
    scale = torch.where(cmax > 0, gmax / cmax.clamp_min(1e-30), torch.zeros_like(cmax))
    return alpha * gnn_pred + (1.0 - alpha) * knn_mean * scale


def uncentred_cosine_columns(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-column uncentred cosine between ``(n, G)`` matrices (0 for a zero column)."""
    return _cos_rows(a, b, 0)
