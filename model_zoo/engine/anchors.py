"""Anchor grid with mmdet's ``AnchorGenerator`` semantics (not torchvision's).

Shapes: A anchors per location (ratios × scales), H_l × W_l feature-map size of level l.
Base anchors are centred on (0, 0) (``center_offset=0``), unrounded, with no "-1"; locations are
``arange(W_l) * stride``; the flattened order is y-major, then x, then anchor, matching
``score.permute(1, 2, 0).reshape(-1)`` of an (A, H_l, W_l) head output.
"""

from __future__ import annotations

from typing import Sequence

import torch


def base_anchors(stride: int, ratios: Sequence[float], scales: Sequence[float]) -> torch.Tensor:
    """Anchors (Tensor[A, 4], x1 y1 x2 y2 pixels) around (0, 0) for one level; ratio-major."""
    ratios_t = torch.tensor(ratios, dtype=torch.float32)
    scales_t = torch.tensor(scales, dtype=torch.float32)
    h_ratios = torch.sqrt(ratios_t)
    w_ratios = 1 / h_ratios
    widths = (stride * w_ratios[:, None] * scales_t[None, :]).view(-1)
    heights = (stride * h_ratios[:, None] * scales_t[None, :]).view(-1)
    return torch.stack([-0.5 * widths, -0.5 * heights, 0.5 * widths, 0.5 * heights], dim=-1)


def grid_anchors(
    base: torch.Tensor, feature_size: tuple[int, int], stride: int, device: torch.device | str
) -> torch.Tensor:
    """All anchors of one level.

    Args:
        base (Tensor[A, 4]): from :func:`base_anchors`.
        feature_size: (H_l, W_l) of the level's feature map.

    Returns:
        Tensor[H_l * W_l * A, 4]: (x1, y1, x2, y2) in resized-image pixels, y-major then x then anchor.
    """
    height, width = feature_size
    shift_x = torch.arange(0, width, device=device).to(torch.float32) * stride
    shift_y = torch.arange(0, height, device=device).to(torch.float32) * stride
    xx = shift_x.repeat(height)  # (H*W,) x varies fastest
    yy = shift_y.view(-1, 1).repeat(1, width).view(-1)
    shifts = torch.stack([xx, yy, xx, yy], dim=-1)  # (H*W, 4)
    return (base.to(device)[None, :, :] + shifts[:, None, :]).view(-1, 4)


class AnchorGenerator:
    """Anchors of every pyramid level; base anchors are computed once (no weights, not a module)."""

    def __init__(self, strides: Sequence[int], ratios: Sequence[float], scales: Sequence[float]) -> None:
        self.strides = tuple(strides)
        self.base = [base_anchors(stride, ratios, scales) for stride in self.strides]

    @property
    def num_anchors(self) -> int:
        return self.base[0].shape[0]

    def __call__(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Per level Tensor[H_l * W_l * A, 4] for feature maps (N, C, H_l, W_l)."""
        return [
            grid_anchors(base, (feature.shape[2], feature.shape[3]), stride, feature.device)
            for base, feature, stride in zip(self.base, features, self.strides)
        ]
