"""Attention maps of a GeneralizedAttention block for one query point.

The map is computed by the model's own modules, outside their ``forward``: the backbone runs up
to the block (``ResNet.block_input``, ``Bottleneck.conv2_features``) and the block gives the
softmax weights of one query (``GeneralizedAttention.query_weights``), the same softmax its
forward computes. Nothing is stored on a module, so maps may be asked for while other threads
run batches on the same detector. Only the backbone runs, up to the block: a caller that wants
the image's detections too asks ``Detector.infer`` for them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from model_zoo.errors import AttentionQueryError
from model_zoo.images import ImageInput
from model_zoo.predictor import Detector


@dataclass(frozen=True)
class AttentionMap:
    """Attention of one query over the key grid.

    Attributes:
        weights: (M, h_kv, w_kv) per head; each head sums to 1 over the key grid (padding included).
        query_cell: (i, j) of the query on the block's feature map.
        key_centers_x / key_centers_y: key-cell centres in original-image pixels, (w_kv,) and (h_kv,).
        query_independent: True for '0010', whose weights are the same for every query.
    """

    variant: str
    attention_type: str
    stage: int
    block: int
    query_xy: tuple[float, float]
    query_cell: tuple[int, int]
    weights: np.ndarray
    key_centers_x: np.ndarray
    key_centers_y: np.ndarray
    query_independent: bool

    @property
    def mean_weights(self) -> np.ndarray:
        """(h_kv, w_kv) average over heads; still sums to 1."""
        return self.weights.mean(axis=0)


def attention_blocks(detector: Detector) -> dict[int, int]:
    """{stage: number of blocks with attention} of the detector's variant."""
    spec = detector.entry.arch.backbone
    if spec.attention is None:
        return {}
    return {stage: spec.stage_blocks[stage - 1] for stage in spec.attention.stages}


def check_attention_query(detector: Detector, stage: int | None, block: int, head: int | None = None) -> int:
    """Validate stage / block / head for ``detector``; return the stage (default: its first with attention).

    Raises:
        AttentionQueryError: naming the bad value and the valid ones.
    """
    attention = detector.entry.arch.backbone.attention
    blocks = attention_blocks(detector)
    if attention is None or not blocks:
        raise AttentionQueryError(f"variant {detector.variant} has no GeneralizedAttention blocks")
    stage = min(blocks) if stage is None else stage
    if stage not in blocks:
        raise AttentionQueryError(f"stage {stage} of {detector.variant} has no attention; stages with attention: {sorted(blocks)}")
    if not 0 <= block < blocks[stage]:
        raise AttentionQueryError(f"block must be in 0..{blocks[stage] - 1} for stage {stage}, got {block}")
    num_heads = attention.num_heads
    if head is not None and not 0 <= head < num_heads:
        raise AttentionQueryError(f"head must be in 0..{num_heads - 1} (or omitted: the average over heads), got {head}")
    return stage


def attention_map(detector: Detector, image: ImageInput, *, stage: int, block: int, x: float, y: float) -> AttentionMap:
    """Block ``block`` of ``stage``'s attention for the query at (x, y), original-image pixels.
    Thread-safe.

    Raises:
        AttentionQueryError: a stage or block without attention, or a point outside the image.
    """
    check_attention_query(detector, stage, block)
    prepared = detector.prepare(image)
    height, width = prepared.resized.original_shape
    if not (0 <= x < width and 0 <= y < height):
        raise AttentionQueryError(f"query point ({x}, {y}) is outside the {width}x{height} image")
    stride = 2 ** (stage + 1)  # feature stride of ResNet stage `stage` (conv2 output)
    scale_w, scale_h = prepared.resized.scale_factor
    backbone = detector.model.backbone
    bottleneck = getattr(backbone, f"layer{stage}")[block]
    attention = bottleneck.gen_attention_block
    with torch.inference_mode():
        features = bottleneck.conv2_features(backbone.block_input(detector.collate([prepared]).tensor, stage=stage, block=block))
        rows, cols = features.shape[2:]
        cell = (min(int(y * scale_h // stride), rows - 1), min(int(x * scale_w // stride), cols - 1))
        weights = attention.query_weights(features, cell)[0].float().cpu().numpy()  # (M, h_kv, w_kv)
    key_h, key_w = weights.shape[1:]
    key_step = stride * attention.kv_stride  # resized-image pixels between key cells
    return AttentionMap(
        variant=detector.variant,
        attention_type=detector.entry.arch.attention_type or "",
        stage=stage,
        block=block,
        query_xy=(float(x), float(y)),
        query_cell=cell,
        weights=weights,
        key_centers_x=(np.arange(key_w) * key_step + stride / 2) / scale_w,
        key_centers_y=(np.arange(key_h) * key_step + stride / 2) / scale_h,
        query_independent=attention.query_independent,
    )
