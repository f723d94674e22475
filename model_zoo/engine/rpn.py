"""Region proposal network: the head (weights) and proposal selection (pure), as mmdet 3.3.

Shapes: N images, L levels, A anchors per location, (H_l, W_l) level sizes.
Per image and level: sigmoid objectness, the top ``nms_pre`` by a descending sort, decode
against the anchors, drop boxes with w or h not above ``min_bbox_size``, NMS within each level
(level id as the group), keep ``max_per_img``. Proposals are in resized-image pixels.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .boxes import batched_nms, decode_deltas
from .spec import RPNSpec


class RPNHead(nn.Module):
    """Shared 3×3 conv, then per-anchor objectness (``rpn_cls``) and deltas (``rpn_reg``)."""

    def __init__(self, in_channels: int, feat_channels: int, num_anchors: int) -> None:
        super().__init__()
        self.rpn_conv = nn.Conv2d(in_channels, feat_channels, 3, padding=1)
        self.rpn_cls = nn.Conv2d(feat_channels, num_anchors, 1)
        self.rpn_reg = nn.Conv2d(feat_channels, num_anchors * 4, 1)

    def forward(self, features: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per level: objectness logits (N, A, H_l, W_l) and deltas (N, 4A, H_l, W_l)."""
        logits, deltas = [], []
        for feature in features:
            hidden = F.relu(self.rpn_conv(feature))
            logits.append(self.rpn_cls(hidden))
            deltas.append(self.rpn_reg(hidden))
        return logits, deltas


def propose(
    logits: Sequence[torch.Tensor],
    deltas: Sequence[torch.Tensor],
    anchors: Sequence[torch.Tensor],
    image_shapes: Sequence[tuple[int, int]],
    spec: RPNSpec,
) -> list[torch.Tensor]:
    """Proposals of every image of a batch from the head's per-level outputs (N, ...) and anchors."""
    return [
        select_proposals([level[i] for level in logits], [level[i] for level in deltas], anchors, shape, spec)
        for i, shape in enumerate(image_shapes)
    ]


def select_proposals(
    logits: Sequence[torch.Tensor],
    deltas: Sequence[torch.Tensor],
    anchors: Sequence[torch.Tensor],
    image_shape: tuple[int, int],
    spec: RPNSpec,
) -> torch.Tensor:
    """Proposals of one image.

    Args:
        logits: per level Tensor[A, H_l, W_l] objectness logits.
        deltas: per level Tensor[4A, H_l, W_l].
        anchors: per level Tensor[H_l * W_l * A, 4] (y, x, anchor order).
        image_shape: (h, w) of the resized image; decoded boxes are clipped to it.

    Returns:
        Tensor[K, 4] proposals in resized-image pixels, by descending score (K ≤ max_per_img).
    """
    level_scores, level_deltas, level_anchors, level_ids = [], [], [], []
    for level, (logit, delta, anchor) in enumerate(zip(logits, deltas, anchors)):
        scores = logit.permute(1, 2, 0).reshape(-1).sigmoid()  # (H*W*A,)
        delta = delta.permute(1, 2, 0).reshape(-1, 4)  # (H*W*A, 4)
        if 0 < spec.nms_pre < scores.shape[0]:
            scores, order = scores.sort(descending=True)
            top = order[: spec.nms_pre]
            scores, delta, anchor = scores[: spec.nms_pre], delta[top], anchor[top]
        level_scores.append(scores)
        level_deltas.append(delta)
        level_anchors.append(anchor)
        level_ids.append(scores.new_full((scores.size(0),), level, dtype=torch.long))
    scores = torch.cat(level_scores)
    ids = torch.cat(level_ids)
    boxes = decode_deltas(torch.cat(level_anchors), torch.cat(level_deltas), spec.target_stds, image_shape)
    if spec.min_bbox_size >= 0:
        valid = ((boxes[:, 2] - boxes[:, 0]) > spec.min_bbox_size) & ((boxes[:, 3] - boxes[:, 1]) > spec.min_bbox_size)
        if not valid.all():
            boxes, scores, ids = boxes[valid], scores[valid], ids[valid]
    keep = batched_nms(boxes, scores, ids, spec.nms_iou)
    return boxes[keep][: spec.max_per_img]
