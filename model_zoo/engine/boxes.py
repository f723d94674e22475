"""Box maths with mmdet / mmcv semantics, as pure functions.

Boxes are (x1, y1, x2, y2) float32 pixels; there is no "+1" anywhere.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torchvision.ops import nms as _torchvision_nms

# |log(16 / 1000)|: the largest log-scale a delta may apply (DeltaXYWHBBoxCoder wh_ratio_clip).
MAX_LOG_RATIO = abs(math.log(16 / 1000))
# mmcv.ops.batched_nms switches to a per-class loop at this many boxes.
BATCHED_NMS_SPLIT = 10000


def decode_deltas(
    anchors: torch.Tensor,
    deltas: torch.Tensor,
    stds: Sequence[float],
    max_shape: tuple[int, int],
) -> torch.Tensor:
    """mmdet ``delta2bbox`` (means 0): apply (dx, dy, dw, dh) deltas to boxes, then clip.

    Args:
        anchors (Tensor[K, 4]): reference boxes.
        deltas (Tensor[K, 4 * C]): C deltas per box (class-specific regression when C > 1).
        stds: the coder's target stds for (dx, dy, dw, dh).
        max_shape: (h, w) of the resized image; x is clipped to [0, w], y to [0, h].

    Returns:
        Tensor[K, 4 * C]: decoded boxes.
    """
    num_boxes, num_classes = deltas.size(0), deltas.size(1) // 4
    if num_boxes == 0:
        return deltas
    deltas = deltas.reshape(-1, 4) * deltas.new_tensor(stds).view(1, -1)
    refs = anchors.repeat(1, num_classes).reshape(-1, 4)
    centers = (refs[:, :2] + refs[:, 2:]) * 0.5
    sizes = refs[:, 2:] - refs[:, :2]
    new_centers = centers + sizes * deltas[:, :2]
    new_sizes = sizes * deltas[:, 2:].clamp(min=-MAX_LOG_RATIO, max=MAX_LOG_RATIO).exp()
    boxes = torch.cat([new_centers - new_sizes * 0.5, new_centers + new_sizes * 0.5], dim=-1)
    boxes[..., 0::2].clamp_(min=0, max=max_shape[1])
    boxes[..., 1::2].clamp_(min=0, max=max_shape[0])
    return boxes.reshape(num_boxes, -1)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """mmcv's ``nms`` on CPU/CUDA: indices kept, by descending score.

    Ties in score are ordered by ``Tensor.sort(descending=True)``, as mmcv's kernel orders them;
    torchvision's stable sort then keeps that order.

    Args:
        boxes (Tensor[K, 4]), scores (Tensor[K]).

    Returns:
        Tensor[K'] int64 indices into ``boxes``.
    """
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    order = scores.sort(descending=True)[1]
    keep = _torchvision_nms(boxes[order], scores[order], iou_threshold)
    return order[keep]


def batched_nms(
    boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """mmcv's ``batched_nms``: NMS within each group (class or level), by the offset trick.

    Boxes of group g are shifted by ``g * (max coordinate + 1)`` so groups never overlap. Below
    10000 boxes one NMS runs; from 10000 on, one NMS per group on the *shifted* boxes and a final
    re-sort, exactly as mmcv does (torchvision's ``batched_nms`` splits elsewhere and unshifted).

    Args:
        boxes (Tensor[K, 4]), scores (Tensor[K]), groups (Tensor[K] int64).

    Returns:
        Tensor[K'] int64 indices kept, by descending score.
    """
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    offsets = groups.to(boxes) * (boxes.max() + torch.tensor(1).to(boxes))
    shifted = boxes + offsets[:, None]
    if shifted.shape[0] < BATCHED_NMS_SPLIT:
        return nms(shifted, scores, iou_threshold)
    kept_mask = torch.zeros_like(scores, dtype=torch.bool)
    for group in torch.unique(groups):
        members = (groups == group).nonzero(as_tuple=False).view(-1)
        kept_mask[members[nms(shifted[members], scores[members], iou_threshold)]] = True
    kept = kept_mask.nonzero(as_tuple=False).view(-1)
    return kept[scores[kept].sort(descending=True)[1]]


def rescale_boxes(boxes: torch.Tensor, scale_factor: tuple[float, float]) -> torch.Tensor:
    """Map boxes (Tensor[K, 4C]) from resized to original pixels: multiply by (1/sw, 1/sh), as mmdet."""
    factors = boxes.new_tensor([1 / scale_factor[0], 1 / scale_factor[1]]).repeat(boxes.size(-1) // 2)
    return boxes * factors
