"""Second stage: RoIAlign per pyramid level, Shared2FC box head, and mmdet's post-processing.

Shapes: K proposals (all images), S = output_size (7), C = 256 channels, K_cls = num_classes + 1
(background is the last index), R = num_classes * 4 class-specific deltas.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import RoIAlign

from .boxes import batched_nms, decode_deltas, rescale_boxes
from .spec import RoISpec


class Shared2FCBBoxHead(nn.Module):
    """flatten → fc → ReLU → fc → ReLU → (fc_cls, fc_reg); key names as mmdet's.

    ``flatten`` turns each RoI's (C, S, S) features into one row in mmdet's (C, S, S) order.
    """

    def __init__(self, in_channels: int, spec: RoISpec) -> None:
        super().__init__()
        self.roi_shape = (in_channels, spec.output_size, spec.output_size)  # (C, S, S) of one RoI
        flat = in_channels * spec.output_size * spec.output_size
        widths = [flat] + [spec.fc_out_channels] * spec.num_shared_fcs
        self.flatten: nn.Module = nn.Flatten(start_dim=1)
        self.shared_fcs = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.fc_cls = nn.Linear(spec.fc_out_channels, spec.num_classes + 1)
        self.fc_reg = nn.Linear(spec.fc_out_channels, spec.num_classes * 4)

    def forward(self, roi_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """roi_features (Tensor[K, C, S, S]) → logits (Tensor[K, K_cls]), deltas (Tensor[K, R])."""
        x = self.flatten(roi_features)  # (K, C·S·S)
        for fc in self.shared_fcs:
            x = F.relu(fc(x))
        return self.fc_cls(x), self.fc_reg(x)


class StandardRoIHead(nn.Module):
    """Holds ``bbox_head`` (checkpoint prefix ``roi_head.bbox_head``) and the RoI extraction:
    one aligned ``RoIAlign`` per pyramid level in ``roi_layers`` (no weights, as mmdet's
    ``bbox_roi_extractor.roi_layers``)."""

    def __init__(self, in_channels: int, spec: RoISpec) -> None:
        super().__init__()
        self.spec = spec
        self.roi_layers = nn.ModuleList(
            RoIAlign(spec.output_size, spatial_scale=1.0 / stride, sampling_ratio=spec.sampling_ratio, aligned=True)
            for stride in spec.featmap_strides
        )
        self.bbox_head = Shared2FCBBoxHead(in_channels, spec)

    def forward(
        self,
        features: Sequence[torch.Tensor],
        proposals: Sequence[torch.Tensor],
        image_shapes: Sequence[tuple[int, int]],
        scale_factors: Sequence[tuple[float, float]],
    ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Final detections per image: boxes (Tensor[D, 4], original-image pixels), scores (Tensor[D]),
        labels (Tensor[D] int64 in 0..num_classes-1), D ≤ max_per_img, by descending score."""
        rois = proposals_to_rois(proposals)
        if rois.shape[0] == 0:
            return [empty_detections(rois.device) for _ in proposals]
        roi_features = extract_roi_features(features, rois, self.roi_layers, self.spec)
        logits, deltas = self.bbox_head(roi_features)
        logits, deltas = logits.float(), deltas.float()
        counts = [len(p) for p in proposals]
        return [
            postprocess_detections(boxes, cls_logits, box_deltas, shape, factor, self.spec)
            for boxes, cls_logits, box_deltas, shape, factor in zip(
                proposals, logits.split(counts), deltas.split(counts), image_shapes, scale_factors
            )
        ]


def proposals_to_rois(proposals: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per-image boxes → Tensor[K, 5] of (image index, x1, y1, x2, y2) (mmdet ``bbox2roi``)."""
    rois = [torch.cat([boxes.new_full((boxes.size(0), 1), i), boxes], dim=-1) for i, boxes in enumerate(proposals)]
    return torch.cat(rois, dim=0)


def map_roi_levels(rois: torch.Tensor, num_levels: int, finest_scale: float) -> torch.Tensor:
    """Pyramid level of each RoI: floor(log2(sqrt(area) / finest_scale + 1e-6)), clamped to the levels."""
    scale = torch.sqrt((rois[:, 3] - rois[:, 1]) * (rois[:, 4] - rois[:, 2]))
    levels = torch.floor(torch.log2(scale / finest_scale + 1e-6))
    return levels.clamp(min=0, max=num_levels - 1).long()


def extract_roi_features(
    features: Sequence[torch.Tensor], rois: torch.Tensor, roi_layers: Sequence[nn.Module] | nn.ModuleList, spec: RoISpec
) -> torch.Tensor:
    """Each RoI pooled on its level (mmdet ``SingleRoIExtractor``): Tensor[K, C, S, S].

    features: P2.. (N, C, H_l, W_l), of which the first ``len(roi_layers)`` are used; rois: (K, 5)
    from ``proposals_to_rois``; roi_layers: per level a pooling module called as ``layer(feature,
    rois)``. A degenerate RoI (NaN level, as in mmdet) keeps zero features.
    """
    levels = map_roi_levels(rois, len(roi_layers), spec.finest_scale)
    pooled_levels: list[tuple[torch.Tensor, torch.Tensor]] = []  # (RoI indices, their pooled features)
    for level, (feature, pool) in enumerate(zip(features, roi_layers)):
        indices = (levels == level).nonzero(as_tuple=False).squeeze(1)
        if indices.numel() > 0:
            pooled_levels.append((indices, pool(feature, rois[indices])))
    if len(pooled_levels) == 1 and pooled_levels[0][0].numel() == rois.size(0):
        return pooled_levels[0][1]  # every RoI on one level: already in RoI order
    # Zeros in the pooling's memory layout, so that the copies below do not transpose.
    channels_last = bool(pooled_levels) and pooled_levels[0][1].is_contiguous(memory_format=torch.channels_last)
    out = torch.empty(
        (rois.size(0), features[0].size(1), spec.output_size, spec.output_size), dtype=features[0].dtype,
        device=features[0].device, memory_format=torch.channels_last if channels_last else torch.contiguous_format,
    ).zero_()  # fmt: skip
    for indices, pooled in pooled_levels:
        out[indices] = pooled
    return out


def postprocess_detections(
    proposals: torch.Tensor,
    logits: torch.Tensor,
    deltas: torch.Tensor,
    image_shape: tuple[int, int],
    scale_factor: tuple[float, float],
    spec: RoISpec,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """mmdet ``_predict_by_feat_single`` + ``multiclass_nms`` for one image.

    Softmax over K_cls classes, decode class-specific deltas, clip to the resized image, rescale
    to original pixels (before NMS, as mmdet), keep scores strictly above ``score_thr``, NMS per
    class, keep ``max_per_img``.
    """
    num_rois, num_classes = proposals.size(0), spec.num_classes
    probs = F.softmax(logits, dim=-1)
    boxes = decode_deltas(proposals.repeat_interleave(num_classes, dim=0), deltas.view(-1, 4), spec.target_stds, image_shape)
    boxes = rescale_boxes(boxes, scale_factor).view(num_rois, -1)
    boxes = boxes.view(num_rois, -1, 4).reshape(-1, 4)  # (K * num_classes, 4), roi-major
    scores = probs[:, :-1].reshape(-1)
    labels = torch.arange(num_classes, device=probs.device).view(1, -1).expand(num_rois, -1).reshape(-1)
    candidates = (scores > spec.score_thr).nonzero(as_tuple=False).squeeze(1)
    boxes, scores, labels = boxes[candidates], scores[candidates], labels[candidates]
    if boxes.numel() == 0:
        return empty_detections(probs.device)
    keep = batched_nms(boxes, scores, labels, spec.nms_iou)[: spec.max_per_img]
    return boxes[keep], scores[keep], labels[keep]


def empty_detections(device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return (
        torch.zeros((0, 4), device=device),
        torch.zeros((0,), device=device),
        torch.zeros((0,), dtype=torch.long, device=device),
    )
