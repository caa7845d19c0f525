"""Soft mapping of spatial cells onto reference clusters, optimised for gene-wise cosine agreement.

Pure torch, no AnnData: tensors in, mapping weights out. Each spatial cell ``c`` gets
non-negative weights ``m_c`` over the reference clusters (softmaxes of free logits, over
the clusters or, Tangram's way, over the cells: :func:`mapping_weights`); its predicted
panel profile is ``m_c @ profiles``. The logits are optimised with Adam so that each gene's
predicted vector over the cells points the way of its measured one (cosine similarity).
Cells are mapped in random batches of at most ``batch_size`` cells, each batch on its own,
so memory is bounded by a batch (``batch x (clusters + genes)``), never by the reference size.
"""

from __future__ import annotations

import numpy as np
import torch

_EPS = 1e-8


class MappingProblem:
    """One batch's fixed quantities, so that each step costs ``cells x clusters x (genes + clusters)``.

    With ``P = M S`` (``M`` the mapping weights, ``S`` the cluster profiles) and the
    measured ``X`` normalised once by columns (``Xg``), the cosine of gene ``g`` is
    ``(S_g . (M^T Xg)_g) / sqrt(S_g^T (M^T M) S_g)``: the cells x genes prediction is never
    formed during the optimisation.
    """

    def __init__(self, measured: torch.Tensor, profiles: torch.Tensor):
        col = measured.norm(dim=0)
        self.gene_keep = col > _EPS  # genes with signal in this batch
        self.gene_unit = measured / col.clamp_min(_EPS)
        self.profiles = profiles

    def loss(self, logits: torch.Tensor, shares: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """Minus the mean gene-wise cosine similarity over the genes with signal.

        The weights are :func:`mapping_weights` of ``logits`` (``shares``: see there)."""
        weights = mapping_weights(logits, shares)
        S = self.profiles
        gene_num = (S * (weights.T @ self.gene_unit)).sum(dim=0)
        gene_norm = (S * ((weights.T @ weights) @ S)).sum(dim=0).clamp_min(_EPS**2).sqrt()
        gene_sim = _masked_mean(gene_num / gene_norm, self.gene_keep)
        return -gene_sim, {"gene_similarity": float(gene_sim.detach())}


def mapping_weights(logits: torch.Tensor, shares: torch.Tensor | None = None) -> torch.Tensor:
    """Mapping weights, cells x clusters, from logits.

    ``shares=None``: ``logits`` is cells x clusters and each cell's weights sum to 1 (softmax
    over the clusters). Otherwise Tangram's direction: ``logits`` is clusters x cells and each
    cluster spreads its share of the reference (``shares``, summing to 1) over the cells
    (softmax over the cells), times the number of cells so that a cell receives 1 on average.
    """
    if shares is None:
        return torch.softmax(logits, dim=1)
    return (torch.softmax(logits, dim=1) * (shares[:, None] * logits.shape[1])).T


def _masked_mean(values: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    return (values * keep).sum() / keep.sum().clamp_min(1)


def fit_mapping(measured: torch.Tensor, profiles: torch.Tensor, *, steps: int, lr: float, batch_size: int,
                shares: torch.Tensor | None = None, seed: int = 0, log=None) -> torch.Tensor:
    """Mapping weights ``(n_cells, n_clusters)`` of the spatial cells (see :func:`mapping_weights`).

    Parameters
    ----------
    measured
        Spatial cells x panel genes (on the device, float32).
    profiles
        Reference clusters x the same panel genes (same device).
    steps, lr
        Adam steps per batch and learning rate.
    batch_size
        Cells mapped together (a random partition of the cells into near-equal batches).
    shares
        ``None`` or the clusters' shares of the reference: see :func:`mapping_weights`.
    seed
        Seed of the batch partition.
    log
        ``log(name, value)`` receives the similarity of the last step of each batch.
    """
    n, n_clusters = measured.shape[0], profiles.shape[0]
    out = torch.empty((n, n_clusters), dtype=torch.float32, device=measured.device)
    if n == 0:
        return out
    n_batches = -(-n // batch_size)
    order = np.random.default_rng(seed).permutation(n) if n_batches > 1 else np.arange(n)
    for rows in np.array_split(order, n_batches):
        index = torch.as_tensor(rows, device=measured.device)
        problem = MappingProblem(measured[index], profiles)
        shape = (len(rows), n_clusters) if shares is None else (n_clusters, len(rows))
        logits = torch.zeros(shape, dtype=torch.float32, device=measured.device, requires_grad=True)
        optimizer = torch.optim.Adam([logits], lr=lr)
        logged: dict[str, float] = {}
        with torch.enable_grad():  # also when called under no_grad (the reliability refits)
            for _ in range(steps):
                optimizer.zero_grad(set_to_none=True)
                loss, logged = problem.loss(logits, shares)
                loss.backward()
                optimizer.step()
        if log is not None:
            for name, value in logged.items():
                log(name, value)
        with torch.no_grad():
            out[index] = mapping_weights(logits, shares)
    return out
