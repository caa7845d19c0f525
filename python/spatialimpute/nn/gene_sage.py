"""Gene-node GraphSAGE layers of stImpute (docs/algorithms/stimpute.md, "gene graph").

Every (spatial cell, gene) pair carries a ``k``-vector: the gene's expression in the cell's
``k`` nearest reference cells, in distance-rank order. A layer mixes these vectors across
genes with a ``G x G`` aggregation matrix ``A`` (the same for all cells and neighbour slots),
concatenates self and aggregated features, applies one weight ``W`` (``2k x k``) shared by
all genes and cells, a ReLU and an L2 normalisation over the ``k`` dimension.

Tensors use the layout ``(cells, k, genes)`` so that the gene mixing is one matrix product
over ``cells * k`` rows; the slot mixing ``[h, a] @ W`` is computed as
``h @ W[:k] + a @ W[k:]`` (no concatenated copy). The mixing is a :class:`GeneMixing`:
either the dense ``A`` (``G`` multiply-adds per gene and slot) or ``A``'s diagonal plus a
low-rank factorisation of the rest (``2r``), see :meth:`GeneMixing.low_rank`. A layer can
produce the features of a subset of the genes only (``out_genes``): the last layer of a
prediction needs only the genes asked for, while its mixing still reads every gene.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["GeneMixing", "GeneSAGELayer", "GeneSAGE"]


@dataclasses.dataclass(frozen=True)
class GeneMixing:
    """The gene aggregation ``h -> h @ A^T`` over the last dimension of ``h``.

    ``A = diag(diagonal) + left @ right^T`` in the low-rank form, or ``dense_t = A^T``.
    """

    dense_t: torch.Tensor | None = None
    diagonal: torch.Tensor | None = None
    left: torch.Tensor | None = None
    right: torch.Tensor | None = None

    @classmethod
    def dense(cls, agg: torch.Tensor) -> GeneMixing:
        """Exact mixing with the ``(G, G)`` matrix ``agg``."""
        return cls(dense_t=agg.T.contiguous())

    @classmethod
    def low_rank(cls, agg: torch.Tensor, energy: float = 0.999, max_rank: int = 128) -> GeneMixing:
        """``A``'s diagonal kept exactly, the off-diagonal part by its leading singular vectors.

        The rank is the smallest that keeps ``energy`` of the off-diagonal part's squared
        Frobenius norm, at most ``max_rank``; the dense form is returned when that rank would
        not save work (``r > G / 4``). stImpute's graphs are (a row scaling of) ``1 - S`` with
        ``S`` a Gram matrix of gene vectors, so few components carry almost all of it.
        """
        g = agg.shape[0]
        diagonal = torch.diagonal(agg).clone()
        rest = (agg - torch.diag(diagonal)).double()
        total = float((rest**2).sum())
        q = min(g, max_rank + 8)
        if total == 0.0:
            zeros = agg.new_zeros(g, 1)
            return cls(diagonal=diagonal, left=zeros, right=zeros)
        if 4 * q > g:
            u, s, vh = torch.linalg.svd(rest, full_matrices=False)
        else:
            gen_state = torch.random.get_rng_state()
            torch.manual_seed(0)  # svd_lowrank's random projection: same factors for the same graph
            try:
                u, s, v = torch.svd_lowrank(rest, q=q, niter=6)
            finally:
                torch.random.set_rng_state(gen_state)
            vh = v.T
        kept = torch.cumsum(s**2, 0) / total
        rank = int(torch.searchsorted(kept, torch.tensor(energy, dtype=kept.dtype))) + 1
        rank = min(rank, max_rank, s.shape[0])
        if 4 * rank > g:
            return cls.dense(agg)
        left = (u[:, :rank] * s[:rank]).to(agg.dtype).contiguous()
        right = vh[:rank].T.to(agg.dtype).contiguous()
        return cls(diagonal=diagonal, left=left, right=right)

    @property
    def n_genes(self) -> int:
        """``G``."""
        return int(self.dense_t.shape[0] if self.dense_t is not None else self.diagonal.shape[0])

    @property
    def rank(self) -> int | None:
        """Rank of the off-diagonal factorisation (``None`` when dense)."""
        return None if self.left is None else int(self.left.shape[1])

    def __call__(self, h: torch.Tensor, out_genes: torch.Tensor | None = None) -> torch.Tensor:
        """``(h @ A^T)[..., out_genes]`` for ``h`` of shape ``(..., G)``."""
        if self.dense_t is not None:
            agg_t = self.dense_t if out_genes is None else self.dense_t[:, out_genes]
            return torch.matmul(h, agg_t)
        return self.expand(self.project(h), h, out_genes)

    def project(self, h: torch.Tensor) -> torch.Tensor:
        """What the mixing needs of each row of ``h`` beyond the row itself: ``h @ right``
        (``(..., r)``) in the low-rank form, the whole ``h @ A^T`` in the dense form.

        A matrix whose rows are mixed many times (the reference, gathered per cell) keeps
        this instead of its mixing: ``r`` values per row instead of ``G``.
        """
        return torch.matmul(h, self.dense_t if self.dense_t is not None else self.right)

    def expand(self, projection: torch.Tensor, h: torch.Tensor,
               out_genes: torch.Tensor | None = None) -> torch.Tensor:
        """``(h @ A^T)[..., out_genes]`` from ``projection = self.project(h)`` (rows of both gathered alike)."""
        if self.dense_t is not None:
            return projection if out_genes is None else projection[..., out_genes]
        diagonal, left = self.diagonal, self.left
        hs = h
        if out_genes is not None:
            diagonal, left, hs = diagonal[out_genes], left[out_genes], h[..., out_genes]
        return torch.addcmul(torch.matmul(projection, left.T), hs, diagonal)

    def to(self, device) -> GeneMixing:
        """A copy on ``device``."""
        return GeneMixing(**{f.name: None if getattr(self, f.name) is None else getattr(self, f.name).to(device)
                             for f in dataclasses.fields(self)})

    def state(self) -> dict[str, torch.Tensor]:
        """Tensors to save (names without prefix)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> GeneMixing:
        """Inverse of :meth:`state`; refuses an incomplete or inconsistent set of tensors."""
        if set(state) == {"dense_t"}:
            d = state["dense_t"]
            if d.ndim != 2 or d.shape[0] != d.shape[1]:
                raise ValueError(f"dense_t: expected a square matrix, found shape {tuple(d.shape)}")
            return cls(dense_t=d)
        if set(state) != {"diagonal", "left", "right"}:
            raise ValueError(f"gene mixing: expected dense_t or diagonal/left/right, found {sorted(state)}")
        d, left, right = state["diagonal"], state["left"], state["right"]
        if d.ndim != 1 or left.shape != right.shape or left.ndim != 2 or left.shape[0] != d.shape[0]:
            raise ValueError("gene mixing: inconsistent factor shapes")
        return cls(diagonal=d, left=left, right=right)


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

    def forward(self, h: torch.Tensor, mixing: GeneMixing, a: torch.Tensor | None = None,
                out_genes: torch.Tensor | None = None) -> torch.Tensor:
        """Apply the layer.

        Parameters
        ----------
        h
            ``(cells, k, G)`` features.
        mixing
            The gene aggregation (``a[c, j, g] = sum_g' A[g, g'] h[c, j, g']``).
        a
            Optional precomputed aggregation (same shape as the output's genes).
        out_genes
            Genes whose features to return (``None``: all).

        Returns
        -------
        torch.Tensor
            ``(cells, k, G_out)`` features, unit L2 norm (or zero) over ``k``.
        """
        if a is None:
            a = mixing(h, out_genes)
        if out_genes is not None:
            h = h[..., out_genes]
        out = torch.matmul(h.transpose(1, 2), self.weight[: self.k])
        out = out + torch.matmul(a.transpose(1, 2), self.weight[self.k:])  # (c, G_out, k)
        out = F.normalize(F.relu(out), p=2.0, dim=-1, eps=1e-12)
        return out.transpose(1, 2)


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

    def forward(self, h: torch.Tensor, mixing: GeneMixing, a0: torch.Tensor | None = None,
                out_genes: torch.Tensor | None = None) -> torch.Tensor:
        """Run all layers; returns ``(cells, G_out, k)`` (gene-major, ready for a per-pair head).

        ``a0`` is the optional precomputed first-layer aggregation; ``out_genes`` restricts the
        last layer's output to those genes.
        """
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            genes = out_genes if i == last else None
            a = None
            if i == 0 and a0 is not None:
                a = a0 if genes is None else a0[..., genes]
            h = layer(h, mixing, a, genes)
        return h.transpose(1, 2)
