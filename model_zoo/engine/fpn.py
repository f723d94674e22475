"""Feature pyramid (mmdet ``FPN``, ``add_extra_convs=False``): P2..P5 plus P6 by subsampling.

Shapes: inputs C2..C5 (N, C_i, H/s, W/s) for s = 4, 8, 16, 32; outputs P2..P6 with
``out_channels`` channels at strides 4..64. P6 = P5[..., ::2, ::2] (``max_pool2d(k=1, s=2)``).
The detector stores this module as ``neck`` to match the checkpoint keys.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .spec import NeckSpec


class ConvUnit(nn.Module):
    """A conv with bias and no norm/activation, stored as ``.conv`` (mmcv ``ConvModule`` keys)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.conv(x)
        return out


class FPN(nn.Module):
    def __init__(self, spec: NeckSpec) -> None:
        super().__init__()
        self.num_outs = spec.num_outs
        self.lateral_convs = nn.ModuleList(ConvUnit(c, spec.out_channels, 1) for c in spec.in_channels)
        self.fpn_convs = nn.ModuleList(ConvUnit(spec.out_channels, spec.out_channels, 3) for _ in spec.in_channels)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        laterals = [conv(feature) for conv, feature in zip(self.lateral_convs, features)]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1].add_(F.interpolate(laterals[i], size=laterals[i - 1].shape[2:], mode="nearest"))
        outs = [conv(lateral) for conv, lateral in zip(self.fpn_convs, laterals)]
        while len(outs) < self.num_outs:
            outs.append(F.max_pool2d(outs[-1], 1, stride=2))
        return outs
