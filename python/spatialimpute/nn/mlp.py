"""A plain multi-layer perceptron (Linear / ReLU stack) used by several models."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["MLP"]


class MLP(nn.Module):
    """Fully connected network ``Linear -> ReLU -> ... -> Linear``.

    Parameters
    ----------
    sizes
        Layer widths including input and output, e.g. ``(50, 512, 256, 1)``.
        At least two entries.
    output_activation
        Optional module applied to the output (``None``: identity, as in stImpute's
        head, which has no output activation).

    Notes
    -----
    Works on any leading shape: the last dimension is the feature dimension.
    """

    def __init__(self, sizes: Sequence[int], output_activation: nn.Module | None = None) -> None:
        super().__init__()
        sizes = [int(s) for s in sizes]
        if len(sizes) < 2 or any(s < 1 for s in sizes):
            raise ValueError(
                f"sizes: expected at least two positive layer widths, found {sizes!r}; "
                "fix: pass e.g. (n_in, hidden, n_out)."
            )
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(nn.ReLU())
        if output_activation is not None:
            layers.append(output_activation)
        self.net = nn.Sequential(*layers)
        self.sizes = tuple(sizes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.net(x)
