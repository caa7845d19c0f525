"""Graph convolution, attention fusion and the multi-view GCN of STGNET stage 5
(docs/algorithms/stgnet.md, stage 5; derived from Spatial-MGCN)."""

from __future__ import annotations

import math

import torch
from torch import nn

from .zinb import ZINBDecoder


class GraphConvolution(nn.Module):
    """``GC(X, A) = A (X W) + b`` with a (sparse) propagation matrix ``A``.

    Weights and bias are initialised ``U(-1/sqrt(out), 1/sqrt(out))`` as in the original.
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_features, out_features))
        self.bias = nn.Parameter(torch.empty(out_features))
        bound = 1.0 / math.sqrt(out_features)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        """Propagate ``x`` (N x in) over ``adj`` (N x N, sparse COO/CSR or dense)."""
        support = x @ self.weight
        out = torch.sparse.mm(adj, support) if adj.is_sparse or adj.layout == torch.sparse_csr else adj @ support
        return out + self.bias


class GCN(nn.Module):
    """Two-layer GCN: ``GC(in -> h1)``, ReLU, dropout, ``GC(h1 -> h2)`` (no output activation)."""

    def __init__(self, in_features: int, hidden1: int = 128, hidden2: int = 64, dropout: float = 0.0) -> None:
        super().__init__()
        self.gc1 = GraphConvolution(in_features, hidden1)
        self.gc2 = GraphConvolution(hidden1, hidden2)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        """Embed ``x`` over ``adj``."""
        return self.gc2(self.dropout(torch.relu(self.gc1(x, adj))), adj)


class ViewAttention(nn.Module):
    """Attention over views: ``w_v = q . tanh(W e_v + b)``, ``beta = softmax_v w``,
    ``e = sum_v beta_v e_v``."""

    def __init__(self, in_dim: int, hidden: int = 16) -> None:
        super().__init__()
        self.project = nn.Sequential(nn.Linear(in_dim, hidden), nn.Tanh(), nn.Linear(hidden, 1, bias=False))

    def forward(self, views: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``views`` (N, V, d) -> fused (N, d) and weights (N, V)."""
        beta = torch.softmax(self.project(views).squeeze(-1), dim=1)
        return (beta.unsqueeze(-1) * views).sum(dim=1), beta


class MultiViewGCN(nn.Module):
    """Spatial-view and feature-view GCNs, attention fusion, a linear projection and a ZINB
    decoder.

    Parameters
    ----------
    n_genes
        Input and output genes.
    hidden1, hidden2
        GCN widths (paper: 128, 64).
    attention_hidden
        Attention width (paper: 16).
    decoder_hidden
        ZINB decoder width (paper: 128).
    dropout
        GCN dropout (paper config: 0).

    Notes
    -----
    The original also evaluates a shared "common" GCN on both graphs whose output is never
    used; it is omitted (no effect on the result).
    """

    def __init__(
        self,
        n_genes: int,
        hidden1: int = 128,
        hidden2: int = 64,
        attention_hidden: int = 16,
        decoder_hidden: int = 128,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.gcn_spatial = GCN(n_genes, hidden1, hidden2, dropout)
        self.gcn_feature = GCN(n_genes, hidden1, hidden2, dropout)
        self.attention = ViewAttention(hidden2, attention_hidden)
        self.projection = nn.Linear(hidden2, hidden2)
        self.decoder = ZINBDecoder(hidden2, n_genes, decoder_hidden)

    def forward(self, x: torch.Tensor, adj_spatial: torch.Tensor, adj_feature: torch.Tensor) -> dict[str, torch.Tensor]:
        """Return a dict with ``emb`` (N, hidden2), ``pi``, ``theta``, ``mu`` (N, genes) and
        ``attention`` (N, 2)."""
        e_s = self.gcn_spatial(x, adj_spatial)
        e_f = self.gcn_feature(x, adj_feature)
        fused, beta = self.attention(torch.stack([e_s, e_f], dim=1))
        emb = self.projection(fused)
        pi, theta, mu = self.decoder(emb)
        return {"emb": emb, "pi": pi, "theta": theta, "mu": mu, "attention": beta}
