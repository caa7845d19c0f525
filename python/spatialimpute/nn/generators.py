"""STGNET stage-1 conditional data generator (``G1``, docs/algorithms/stgnet.md, stage 1).

The generator maps a Gaussian code and a one-hot cell label to one cell's expression,
laid out as a ``(1, s, s)`` image of the padded gene vector (gene ``j`` at pixel
``(j // s, j % s)``) with values in ``(0, 1)``.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

PAPER_G1_CHANNELS = (512, 256, 128, 64, 32)


class ConvDataGenerator(nn.Module):
    """Conditional convolutional data generator ``G1``.

    Parameters
    ----------
    image_size
        Side ``s`` of the square gene image (``s = ceil(sqrt(G))``).
    n_labels
        Number of label classes ``C`` (size of the one-hot condition).
    latent_dim
        Dimension of the Gaussian code (paper: 128).
    trunk_channels
        Channels of the trunk convolutions (paper: ``(512, 256, 128, 64, 32)``); a final
        convolution maps the last one to 1 channel.
    noise_channels, label_channels
        Channels of the noise branch (paper: 32) and the label branch (paper: 8).
    quirk_bn_eps
        Keep the original's ``eps=0.8`` BatchNorms (a positional-argument slip that changes
        the numbers; default ``True`` for fidelity).

    Notes
    -----
    The label branch of the original upsamples the ``(C, 1, 1)`` one-hot bilinearly to
    ``(C, s, s)`` (a constant map) and applies a 3x3 convolution with zero padding; this is
    reproduced exactly (the border pixels see fewer taps).
    """

    def __init__(
        self,
        image_size: int,
        n_labels: int,
        latent_dim: int = 128,
        trunk_channels: Sequence[int] = PAPER_G1_CHANNELS,
        noise_channels: int = 32,
        label_channels: int = 8,
        quirk_bn_eps: bool = True,
    ) -> None:
        super().__init__()
        if image_size < 1 or n_labels < 1 or latent_dim < 1 or len(trunk_channels) < 1:
            raise ValueError(
                f"ConvDataGenerator: image_size, n_labels, latent_dim must be >= 1 and trunk_channels "
                f"non-empty; found {image_size}, {n_labels}, {latent_dim}, {tuple(trunk_channels)}"
            )
        eps = 0.8 if quirk_bn_eps else 1e-5
        self.image_size = int(image_size)
        self.n_labels = int(n_labels)
        self.latent_dim = int(latent_dim)
        self.noise_channels = int(noise_channels)
        s = self.image_size
        self.fc = nn.Linear(latent_dim, noise_channels * s * s)
        self.noise_branch = nn.Sequential(
            nn.BatchNorm2d(noise_channels),
            nn.Conv2d(noise_channels, noise_channels, 3, 1, 1),
            nn.BatchNorm2d(noise_channels, eps=eps),
            nn.ReLU(inplace=True),
        )
        self.label_branch = nn.Sequential(
            nn.Conv2d(n_labels, label_channels, 3, 1, 1),
            nn.BatchNorm2d(label_channels),
            nn.ReLU(inplace=True),
        )
        layers: list[nn.Module] = [nn.BatchNorm2d(noise_channels + label_channels, eps=eps)]
        c_in = noise_channels + label_channels
        for c_out in trunk_channels:
            layers += [nn.Conv2d(c_in, c_out, 3, 1, 1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
            c_in = c_out
        layers += [nn.Conv2d(c_in, 1, 3, 1, 1), nn.Sigmoid()]
        self.trunk = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Generate images.

        Parameters
        ----------
        z
            Codes, shape ``(B, latent_dim)``.
        y
            One-hot labels, shape ``(B, C)``.

        Returns
        -------
        torch.Tensor
            Images ``(B, 1, s, s)`` in ``(0, 1)``.
        """
        s = self.image_size
        h = self.fc(z).view(z.shape[0], self.noise_channels, s, s)
        h = self.noise_branch(h)
        # bilinear upsampling of a 1x1 map is a constant broadcast
        lab = y[:, :, None, None].expand(-1, -1, s, s)
        lab = self.label_branch(lab)
        return self.trunk(torch.cat([h, lab], dim=1))
