"""STGNET conditional critics (``D1``/``D2``/``D3``, docs/algorithms/stgnet.md, stages 1-3) and the
WGAN-GP gradient penalty."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn


def _block_channels(n_blocks: int) -> list[int]:
    """Channels of the pooling blocks: paper 16 -> 8 -> 4 -> 2 -> 2 for four blocks."""
    return [max(2, 16 >> (i + 1)) for i in range(n_blocks)]


class ConvCritic(nn.Module):
    """Conditional critic on gene images, optionally conditioned on coordinates (``D3``).

    Parameters
    ----------
    image_size
        Side ``s`` of the gene image.
    n_labels
        Number of label classes.
    map_size
        Side of the map the image is projected to by the first Linear layer (paper: 64).
        Must be a power of two >= 8.
    n_coords
        0 for ``D1``/``D2``; 2 for the spatial critic ``D3`` (adds the coordinate branch).

    Notes
    -----
    Output is a sigmoid score per sample, as in the original (non-standard for WGAN-GP but
    kept for fidelity). After the first conv and 2x2 max-pool the map is ``map_size / 2``;
    pooling blocks halve it down to 2x2 and a 2x2 convolution gives one value.
    """

    def __init__(self, image_size: int, n_labels: int, map_size: int = 64, n_coords: int = 0) -> None:
        super().__init__()
        if map_size < 8 or map_size & (map_size - 1):
            raise ValueError(f"ConvCritic: map_size must be a power of two >= 8; found {map_size}")
        self.image_size = int(image_size)
        self.map_size = int(map_size)
        self.n_coords = int(n_coords)
        half = map_size // 2
        self.fc = nn.Linear(image_size * image_size, map_size * map_size)
        self.image_branch = nn.Sequential(
            nn.Conv2d(1, 16, 3, 1, 1), nn.MaxPool2d(2), nn.BatchNorm2d(16), nn.LeakyReLU(0.2, inplace=True)
        )
        self.label_branch = nn.Sequential(
            nn.Conv2d(n_labels, 8, 3, 1, 1), nn.BatchNorm2d(8), nn.LeakyReLU(0.2, inplace=True)
        )
        c_cat = 16 + 8
        if n_coords:
            self.coord_branch = nn.Sequential(
                nn.Conv2d(n_coords, 20, 3, 1, 1), nn.BatchNorm2d(20), nn.LeakyReLU(0.2, inplace=True)
            )
            c_cat += 20
        else:
            self.coord_branch = None
        self.half = half
        self.merge = nn.Sequential(nn.Conv2d(c_cat, 16, 3, 1, 1), nn.BatchNorm2d(16), nn.LeakyReLU(0.2, inplace=True))
        n_blocks = int(round(torch.log2(torch.tensor(float(half))).item())) - 1
        blocks: list[nn.Module] = []
        c_in = 16
        for c_out in _block_channels(n_blocks):
            blocks += [
                nn.Conv2d(c_in, c_out, 3, 1, 1),
                nn.MaxPool2d(2),
                nn.InstanceNorm2d(c_out, affine=True),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            c_in = c_out
        blocks += [nn.Conv2d(c_in, 1, 2, 1, 0), nn.Sigmoid()]
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor, y: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """Score images.

        Parameters
        ----------
        x
            Images ``(B, 1, s, s)``.
        y
            One-hot labels ``(B, C)``.
        c
            Coordinates ``(B, 2)`` in [0, 1] (only for a critic built with ``n_coords=2``).

        Returns
        -------
        torch.Tensor
            Scores ``(B,)`` in ``(0, 1)``.
        """
        b = x.shape[0]
        h = self.fc(x.reshape(b, -1)).view(b, 1, self.map_size, self.map_size)
        h = self.image_branch(h)
        lab = self.label_branch(y[:, :, None, None]).expand(-1, -1, self.half, self.half)
        parts = [h, lab]
        if self.coord_branch is not None:
            if c is None:
                raise ValueError("ConvCritic built with n_coords > 0 needs coordinates c")
            parts.append(self.coord_branch(c[:, :, None, None]).expand(-1, -1, self.half, self.half))
        h = self.merge(torch.cat(parts, dim=1))
        return self.blocks(h).view(b)


def gradient_penalty(
    critic: Callable[[torch.Tensor], torch.Tensor],
    real: torch.Tensor,
    fake: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    weight: float = 10.0,
) -> torch.Tensor:
    """WGAN-GP penalty ``weight * mean_i (||grad_x D(x_hat_i)||_2 - 1)^2``.

    ``x_hat = eps * real + (1 - eps) * fake`` with ``eps ~ U(0, 1)`` per sample; both
    inputs are detached; the gradient is taken w.r.t. ``x_hat`` flattened per sample.

    Parameters
    ----------
    critic
        Function of one batch of images returning one score per sample (close over the
        condition, e.g. ``lambda x: D(x, y)``).
    real, fake
        Batches of the same shape ``(B, ...)``.
    generator
        Random generator for ``eps`` (determinism).
    weight
        Penalty weight ``lambda`` (paper: 10).

    Returns
    -------
    torch.Tensor
        Scalar penalty, differentiable w.r.t. the critic's parameters.
    """
    if real.shape != fake.shape:
        raise ValueError(f"gradient_penalty: real and fake shapes differ: {tuple(real.shape)} vs {tuple(fake.shape)}")
    b = real.shape[0]
    eps = torch.rand((b,) + (1,) * (real.dim() - 1), generator=generator, device=real.device, dtype=real.dtype)
    x_hat = (eps * real.detach() + (1.0 - eps) * fake.detach()).requires_grad_(True)
    score = critic(x_hat)
    (grad,) = torch.autograd.grad(score.sum(), x_hat, create_graph=True)
    norms = grad.reshape(b, -1).norm(2, dim=1)
    return weight * ((norms - 1.0) ** 2).mean()
