"""Zero-inflated negative binomial decoder and likelihood (STGNET stage 5, docs/algorithms/stgnet.md)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ZINBDecoder(nn.Module):
    """``h = ReLU(BN1d(Linear(d -> hidden)(e)))``; heads ``pi = sigmoid``, ``theta =
    clamp(softplus, 1e-4, 1e4)``, ``mu = sigmoid`` (mu is the imputed expression).

    Parameters
    ----------
    in_dim
        Embedding dimension (paper: 64).
    n_genes
        Number of output genes.
    hidden
        Hidden width (paper: 128).
    """

    def __init__(self, in_dim: int, n_genes: int, hidden: int = 128) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU())
        self.pi = nn.Linear(hidden, n_genes)
        self.theta = nn.Linear(hidden, n_genes)
        self.mu = nn.Linear(hidden, n_genes)

    def forward(self, e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``(pi, theta, mu)``, each ``(N, n_genes)``."""
        h = self.body(e)
        pi = torch.sigmoid(self.pi(h))
        theta = F.softplus(self.theta(h)).clamp(1e-4, 1e4)
        mu = torch.sigmoid(self.mu(h))
        return pi, theta, mu


def zinb_nll(
    y: torch.Tensor,
    pi: torch.Tensor,
    theta: torch.Tensor,
    mu: torch.Tensor,
    *,
    scale_factor: float = 1.0,
    ridge: float = 0.0,
    eps: float = 1e-10,
) -> torch.Tensor:
    """Mean zero-inflated negative binomial negative log-likelihood (Spatial-MGCN form).

    For ``y >= 1e-8``: ``NB(y) - log(1 - pi)`` with ``NB = lgamma(theta) + lgamma(y + 1) -
    lgamma(y + theta) + (theta + y) log(1 + mu / theta) + y (log theta - log mu)``; for
    ``y < 1e-8``: ``-log(pi + (1 - pi) (theta / (theta + mu))^theta)``. ``theta`` is capped
    at 1e6, ``eps`` guards logs; ``ridge * pi^2`` is added when ``ridge > 0``.

    Parameters
    ----------
    y
        Observations (continuous values are allowed, as in the original on [0, 1] data).
    pi, theta, mu
        Dropout probability, dispersion and mean, same shape as ``y``.

    Returns
    -------
    torch.Tensor
        Scalar mean over all entries.
    """
    mu = mu * scale_factor
    theta = theta.clamp(max=1e6)
    t1 = torch.lgamma(theta + eps) + torch.lgamma(y + 1.0) - torch.lgamma(y + theta + eps)
    t2 = (theta + y) * torch.log1p(mu / (theta + eps)) + y * (torch.log(theta + eps) - torch.log(mu + eps))
    nb_case = t1 + t2 - torch.log(1.0 - pi + eps)
    zero_nb = torch.pow(theta / (theta + mu + eps), theta)
    zero_case = -torch.log(pi + (1.0 - pi) * zero_nb + eps)
    result = torch.where(y < 1e-8, zero_case, nb_case)
    if ridge > 0:
        result = result + ridge * pi.pow(2)
    return result.mean()
