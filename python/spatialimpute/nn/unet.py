"""STGNET U-Net imputers (``G2`` on the reference, ``G3`` on spatial cells;
docs/algorithms/stgnet.md, stages 2-3).

The U-Net core is pix2pix-style: 5x5 stride-2 padding-1 convolutions down, transposed
convolutions up, skip concatenation at every level but the outermost. Map sizes follow
``d -> floor((d - 3) / 2) + 1`` down and ``d -> 2 d + 1`` up (paper: 128 -> 63 -> 31 ->
15 -> 7 -> 3 and back up to 127).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def unet_sizes(map_size: int, n_levels: int) -> list[int]:
    """Spatial sizes of the down path ``[map_size, d1, ..., d_n_levels]``.

    Raises
    ------
    ValueError
        When the geometry does not close (an inner size < 1 or even, so skips would not
        align).
    """
    sizes = [int(map_size)]
    for _ in range(n_levels):
        d = (sizes[-1] - 3) // 2 + 1
        sizes.append(d)
    skip_sizes = sizes[1:-1]  # inputs of the skip levels: must be odd so up(down(d)) == d
    if sizes[-1] < 1 or any(d % 2 == 0 for d in skip_sizes):
        raise ValueError(
            f"unet geometry: map_size={map_size} with n_levels={n_levels} gives down sizes {sizes}; "
            "every inner size must be odd and >= 1. Fix: use map_size 128 with 5 levels (paper), "
            "64 with 5, or 32 with 4."
        )
    return sizes


class _UNetLevel(nn.Module):
    """One skip level: ``a = LReLU(x)``; ``out = cat[a, up(sub(down(a)))]`` (in-place quirk)."""

    def __init__(self, outer: int, inner: int, sub: nn.Module | None) -> None:
        super().__init__()
        self.down = nn.Conv2d(outer, inner, 5, 2, 1, bias=False)
        self.down_norm = nn.BatchNorm2d(inner) if sub is not None else nn.Identity()
        self.sub = sub
        up_in = inner * 2 if sub is not None else inner
        self.up = nn.ConvTranspose2d(up_in, outer, 5, 2, 1, bias=False)
        self.up_norm = nn.BatchNorm2d(outer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.leaky_relu(x, 0.2)  # the original's in-place LReLU: the skip sees the activated input
        h = self.down_norm(self.down(a))
        if self.sub is not None:
            h = self.sub(h)
        h = self.up_norm(self.up(F.relu(h)))
        return torch.cat([a, h], dim=1)


class UNetCore(nn.Module):
    """pix2pix U-Net with ``n_levels`` down-convolutions.

    Parameters
    ----------
    in_channels, out_channels
        Input and output channels.
    ngf
        Channels after the outermost convolution (paper: 64); level ``i`` has
        ``ngf * min(2**i, 8)`` channels.
    n_levels
        Number of down-convolutions (paper: 5).
    """

    def __init__(self, in_channels: int, out_channels: int = 1, ngf: int = 64, n_levels: int = 5) -> None:
        super().__init__()
        if n_levels < 2:
            raise ValueError(f"UNetCore: n_levels must be >= 2; found {n_levels}")
        ch = [ngf * min(2**i, 8) for i in range(n_levels)]
        sub: nn.Module | None = _UNetLevel(ch[-2], ch[-1], None)
        for i in range(n_levels - 2, 0, -1):
            sub = _UNetLevel(ch[i - 1], ch[i], sub)
        self.down = nn.Conv2d(in_channels, ch[0], 5, 2, 1, bias=False)
        self.sub = sub
        self.up = nn.ConvTranspose2d(ch[0] * 2, out_channels, 5, 2, 1, bias=True)
        self.n_levels = n_levels

    def forward(self, x: torch.Tensor, constant: torch.Tensor | None = None) -> torch.Tensor:
        """Map ``(B, in, M, M)`` to ``(B, out, M', M')`` (``M' = M - 1`` for even ``M``).

        ``constant`` ``(B, C)``: the last ``C`` input channels, the same at every position
        of the map (then ``x`` holds only the first ``in - C``). The result is that of the
        full input, but the first convolution reads only ``x``: the constant channels'
        share is, at each output position, their weights summed over the kernel taps that
        fall inside the map, a ``(B, C) @ (C, out * positions)`` product."""
        if constant is None:
            return self.up(F.relu(self.sub(self.down(x))))
        w = self.down.weight
        n_map = x.shape[1]
        h = F.conv2d(x, w[:, :n_map], None, self.down.stride, self.down.padding)
        o, c = w.shape[0], w.shape[1] - n_map
        taps = F.conv2d(x.new_ones((1, 1) + tuple(x.shape[2:])), w[:, n_map:].reshape(o * c, 1, *w.shape[2:]),
                        None, self.down.stride, self.down.padding)  # (1, o * c, M1, M1): taps inside the map
        taps = taps.view(o, c, -1).transpose(0, 1).reshape(c, -1)
        h = h + (constant @ taps).view_as(h)
        return self.up(F.relu(self.sub(h)))


class UNetImputer(nn.Module):
    """STGNET U-Net imputer: ``G2`` (``n_coords=0``) or ``G3`` (``n_coords=2``).

    Parameters
    ----------
    image_size
        Side ``s`` of the gene image.
    n_labels
        Number of label classes.
    map_size
        Side of the U-Net input map (paper: 128).
    ngf, n_levels
        U-Net width and depth (paper: 64, 5).
    n_coords
        0 for the reference imputer, 2 for the spatial imputer.
    stem_channels
        Channels of the convolution on the input map (the original: 32); with the label and
        coordinate channels they are the U-Net core's input, at the full map size, where
        most of the network's compute is.
    mask_input
        Also give the network the mask itself (the paper's ``(x, m)`` input): the first
        linear layer reads ``[v, m]``. False is the original code, where the mask only blends
        noise into the input, ``v = x * m + u * (1 - m)``, so the network cannot tell a
        hidden entry from an observed one by position.
    """

    def __init__(
        self,
        image_size: int,
        n_labels: int,
        map_size: int = 128,
        ngf: int = 64,
        n_levels: int = 5,
        n_coords: int = 0,
        mask_input: bool = False,
        stem_channels: int = 32,
    ) -> None:
        super().__init__()
        sizes = unet_sizes(map_size, n_levels)
        self.image_size = int(image_size)
        self.map_size = int(map_size)
        self.n_coords = int(n_coords)
        self.mask_input = bool(mask_input)
        out_size = 2 * sizes[1] + 1
        self.out_size = out_size
        p = image_size * image_size
        self.fc_in = nn.Linear(p * (2 if mask_input else 1), map_size * map_size)
        self.stem = nn.Sequential(nn.Conv2d(1, stem_channels, 3, 1, 1), nn.BatchNorm2d(stem_channels),
                                  nn.LeakyReLU(0.2, inplace=True))
        self.label_branch = nn.Sequential(
            nn.Conv2d(n_labels, 8, 3, 1, 1), nn.LeakyReLU(0.2, inplace=True), nn.BatchNorm2d(8)
        )
        c_in = stem_channels + 8
        if n_coords:
            self.coord_branch = nn.Sequential(
                nn.Conv2d(n_coords, 8, 3, 1, 1), nn.LeakyReLU(0.2, inplace=True), nn.BatchNorm2d(8)
            )
            c_in += 8
        else:
            self.coord_branch = None
        self.core = UNetCore(c_in, 1, ngf=ngf, n_levels=n_levels)
        self.fc_out = nn.Linear(out_size * out_size, p)
        # channels-last convolutions: measured cheaper on CPU for these small maps (docs/notes/stgnet.md)
        self.to(memory_format=torch.channels_last)

    @torch.no_grad()
    def init_from_teacher(self, teacher: "UNetImputer") -> None:
        """Start as ``teacher``, a reference imputer of the same geometry without coordinates.

        Every shared weight is copied; the first core convolution's weights on the
        coordinate channels are set to 0, so the output equals the teacher's until training
        moves them.
        """
        if teacher.coord_branch is not None or self.coord_branch is None:
            raise ValueError("init_from_teacher: expects a teacher without and a student with coordinates")
        own = self.state_dict()
        for name, value in teacher.state_dict().items():
            if own[name].shape == value.shape:
                own[name].copy_(value)
            elif name == "core.down.weight" and own[name][:, : value.shape[1]].shape == value.shape:
                # input channels [stem, labels, coordinates]
                own[name].zero_()
                own[name][:, : value.shape[1]].copy_(value)
            else:
                raise ValueError(f"init_from_teacher: {name} has shape {tuple(value.shape)} in the teacher and "
                                 f"{tuple(own[name].shape)} here; build both with the same geometry")

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        noise: torch.Tensor,
        y: torch.Tensor,
        c: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Impute.

        Parameters
        ----------
        x, mask, noise
            ``(B, 1, s, s)`` values, 0/1 mask (1 = observed), fill noise.
        y
            One-hot labels ``(B, C)``.
        c
            Coordinates ``(B, 2)`` in [0, 1] (``G3``; ignored by an imputer built without them).

        Returns
        -------
        torch.Tensor
            ``(B, 1, s, s)`` in ``(0, 1)``.
        """
        b = x.shape[0]
        m = self.map_size
        v = (x * mask + noise * (1.0 - mask)).reshape(b, -1)
        if self.mask_input:
            v = torch.cat([v, mask.expand_as(x).reshape(b, -1)], dim=1)
        h = self.stem(self.fc_in(v).view(b, 1, m, m))
        # the label and coordinate channels are the same at every position of the map: the
        # core reads them as (B, 8) vectors (UNetCore.forward), not as (B, 8, m, m) maps
        constant = self.label_branch(y[:, :, None, None]).flatten(1)
        if self.coord_branch is not None:
            if c is None:
                raise ValueError("UNetImputer built with n_coords > 0 needs coordinates c")
            constant = torch.cat([constant, self.coord_branch(c[:, :, None, None]).flatten(1)], dim=1)
        h = F.relu(self.core(h, constant))
        out = torch.sigmoid(self.fc_out(h.reshape(b, -1)))
        return out.view(b, 1, self.image_size, self.image_size)


class ImputerEnsemble(nn.Module):
    """Several reference imputers answering as one: the mean of their outputs.

    Independently initialised and trained ``G2`` networks disagree where the reference
    does not determine the answer; their mean is the teacher stage 3 distils.

    Parameters
    ----------
    members
        Imputers with the same call signature.
    """

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("ImputerEnsemble: needs at least one member")
        self.members = nn.ModuleList(members)

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        """Mean of the members' outputs for the same inputs."""
        out = self.members[0](*args)
        for member in self.members[1:]:
            out = out + member(*args)
        return out / len(self.members)
