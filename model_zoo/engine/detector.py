"""Faster R-CNN assembled from built parts, and the one builder that makes it from an ArchSpec.

Attribute names (``backbone``, ``neck``, ``rpn_head``, ``roi_head``) equal the checkpoint's
top-level key segments.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .anchors import AnchorGenerator
from .backbone import ResNet
from .fpn import FPN
from .preprocess import ImageBatch
from .roi_head import StandardRoIHead
from .rpn import RPNHead, propose
from .spec import ArchSpec, RPNSpec

Detections = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # boxes (D, 4), scores (D,), labels (D,)


@dataclass
class StageOutputs:
    """Intermediate results of one forward, for stage-wise parity checks."""

    features: list[torch.Tensor]  # P2..P6, each (N, 256, H_l, W_l)
    proposals: list[torch.Tensor]  # per image (K_i, 4), resized-image pixels
    detections: list[Detections]  # per image, original-image pixels


class FasterRCNN(nn.Module):
    def __init__(
        self,
        *,
        backbone: ResNet,
        neck: FPN,
        rpn_head: RPNHead,
        anchor_generator: AnchorGenerator,
        rpn_spec: RPNSpec,
        roi_head: StandardRoIHead,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.rpn_head = rpn_head
        self.anchor_generator = anchor_generator
        self.rpn_spec = rpn_spec
        self.roi_head = roi_head

    def forward(self, batch: ImageBatch) -> list[Detections]:
        """Detections per image of ``batch``: boxes in original-image pixels, scores, labels."""
        return self.forward_stages(batch).detections

    def forward_stages(self, batch: ImageBatch) -> StageOutputs:
        # `.float()` is a no-op in fp32; under reduced-precision autocast it keeps selection and
        # box maths in fp32, where bf16 ties would reorder proposals.
        features = [level.float() for level in self.neck(self.backbone(batch.tensor))]
        logits, deltas = self.rpn_head(features)
        logits, deltas = [level.float() for level in logits], [level.float() for level in deltas]
        proposals = propose(logits, deltas, self.anchor_generator(features), batch.image_shapes, self.rpn_spec)
        detections = self.roi_head(features, proposals, batch.image_shapes, batch.scale_factors)
        return StageOutputs(features=features, proposals=proposals, detections=detections)


def build_detector(spec: ArchSpec) -> FasterRCNN:
    """Construct the (untrained, eval-mode) detector that ``spec`` describes."""
    anchor_generator = AnchorGenerator(spec.anchors.strides, spec.anchors.ratios, spec.anchors.scales)
    model = FasterRCNN(
        backbone=ResNet(spec.backbone),
        neck=FPN(spec.neck),
        rpn_head=RPNHead(spec.neck.out_channels, spec.rpn.feat_channels, anchor_generator.num_anchors),
        anchor_generator=anchor_generator,
        rpn_spec=spec.rpn,
        roi_head=StandardRoIHead(spec.neck.out_channels, spec.roi),
    )
    return model.eval()
