"""Attention maps of a GeneralizedAttention block for one query point, captured from a real forward.

The block's own forward records the softmax weights of the probed query (see
``engine.attention.AttentionProbe``); nothing is recomputed by a second implementation. The same
forward produces the image's detections, which come back with the map.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from model_zoo.engine.attention import AttentionProbe, GeneralizedAttention
from model_zoo.errors import AttnzooError
from model_zoo.images import ImageInput
from model_zoo.predictor import DetectionResult, Detector


class AttentionQueryError(AttnzooError):
    """A query point, stage or block that the variant's attention blocks cannot answer."""


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
    detections: DetectionResult

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
    blocks = attention_blocks(detector)
    if not blocks:
        raise AttentionQueryError(f"variant {detector.variant} has no GeneralizedAttention blocks")
    stage = min(blocks) if stage is None else stage
    if stage not in blocks:
        raise AttentionQueryError(f"stage {stage} of {detector.variant} has no attention; stages with attention: {sorted(blocks)}")
    if not 0 <= block < blocks[stage]:
        raise AttentionQueryError(f"block must be in 0..{blocks[stage] - 1} for stage {stage}, got {block}")
    num_heads = detector.entry.arch.backbone.attention.num_heads  # type: ignore[union-attr]
    if head is not None and not 0 <= head < num_heads:
        raise AttentionQueryError(f"head must be in 0..{num_heads - 1} (or omitted: the average over heads), got {head}")
    return stage


def _block(detector: Detector, stage: int, block: int) -> GeneralizedAttention:
    check_attention_query(detector, stage, block)
    module = getattr(detector.model.backbone, f"layer{stage}")[block].gen_attention_block
    assert isinstance(module, GeneralizedAttention)
    return module


def attention_map(detector: Detector, image: ImageInput, *, stage: int, block: int, x: float, y: float) -> AttentionMap:
    """Run ``image`` once, recording block ``block`` of ``stage``'s attention for the query at (x, y).

    (x, y) are original-image pixels. Not thread-safe: the probe lives on the shared module, so
    callers run this where the detector's forwards are serialised (the service's model worker).
    """
    module = _block(detector, stage, block)
    prepared = detector.prepare(image)
    height, width = prepared.resized.original_shape
    if not (0 <= x < width and 0 <= y < height):
        raise AttentionQueryError(f"query point ({x}, {y}) is outside the {width}x{height} image")
    stride = 2 ** (stage + 1)  # feature stride of ResNet stage `stage` (conv2 output)
    scale_w, scale_h = prepared.resized.scale_factor
    pad_h, pad_w = prepared.padded_shape
    rows, cols = math.ceil(pad_h / stride), math.ceil(pad_w / stride)
    cell = (min(int(y * scale_h // stride), rows - 1), min(int(x * scale_w // stride), cols - 1))
    module.probe = AttentionProbe(query=cell)
    try:
        result = detector.infer([prepared])[0]
        probe = module.probe
    finally:
        module.probe = None
    assert probe.weights is not None and probe.key_shape is not None
    key_h, key_w = probe.key_shape
    key_step = stride * module.kv_stride  # resized-image pixels between key cells
    return AttentionMap(
        variant=detector.variant,
        attention_type=detector.entry.arch.attention_type or "",
        stage=stage,
        block=block,
        query_xy=(float(x), float(y)),
        query_cell=cell,
        weights=probe.weights[0].cpu().numpy(),
        key_centers_x=(np.arange(key_w) * key_step + stride / 2) / scale_w,
        key_centers_y=(np.arange(key_h) * key_step + stride / 2) / scale_h,
        query_independent=module.query_independent,
        detections=result,
    )
