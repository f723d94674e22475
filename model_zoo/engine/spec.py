"""Typed, frozen description of one detector architecture: everything the engine reads.

The registry validates an architecture YAML file into an :class:`ArchSpec` (pydantic, in
``model_zoo.registry``); the engine never sees YAML, file names or the metafile. Field names
follow the YAML keys one to one, so an error can name the offending field as ``section.key``.
"""

from __future__ import annotations

from dataclasses import dataclass


class ArchSpecError(ValueError):
    """An architecture description is malformed; ``field`` is the dotted path of the culprit."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class PreprocessSpec:
    scale: tuple[int, int]  # keep-ratio target (long side, short side) in pixels
    mean: tuple[float, float, float]  # RGB
    std: tuple[float, float, float]  # RGB
    size_divisor: int


@dataclass(frozen=True)
class AttentionSpec:
    type: str  # four bits, e.g. "1111" or "0010" (see engine/attention.py)
    stages: tuple[int, ...]  # 1-based ResNet stages with an attention block after conv2
    num_heads: int
    kv_stride: int
    position_magnitude: float


@dataclass(frozen=True)
class BackboneSpec:
    depth: int
    stage_blocks: tuple[int, int, int, int]
    base_channels: int
    dcn_stages: tuple[int, ...]  # 1-based ResNet stages whose conv2 is a DCN v1
    attention: AttentionSpec | None


@dataclass(frozen=True)
class NeckSpec:
    in_channels: tuple[int, ...]
    out_channels: int
    num_outs: int


@dataclass(frozen=True)
class AnchorSpec:
    scales: tuple[float, ...]
    ratios: tuple[float, ...]
    strides: tuple[int, ...]


@dataclass(frozen=True)
class RPNSpec:
    feat_channels: int
    target_stds: tuple[float, float, float, float]
    nms_pre: int
    max_per_img: int
    nms_iou: float
    min_bbox_size: float


@dataclass(frozen=True)
class RoISpec:
    output_size: int
    sampling_ratio: int
    finest_scale: float
    featmap_strides: tuple[int, ...]
    fc_out_channels: int
    num_shared_fcs: int
    num_classes: int
    target_stds: tuple[float, float, float, float]
    score_thr: float
    nms_iou: float
    max_per_img: int


@dataclass(frozen=True)
class ArchSpec:
    preprocess: PreprocessSpec
    backbone: BackboneSpec
    neck: NeckSpec
    anchors: AnchorSpec
    rpn: RPNSpec
    roi: RoISpec

    @property
    def attention_type(self) -> str | None:
        return self.backbone.attention.type if self.backbone.attention else None

    @property
    def with_dcn(self) -> bool:
        return bool(self.backbone.dcn_stages)


def check_supported(spec: ArchSpec) -> None:
    """Refuse a well-typed spec the engine cannot build (e.g. an attention type other than 4 bits).

    Raises:
        ArchSpecError: naming the dotted field (``arch.backbone.attention.type``) and why.
    """
    backbone = spec.backbone
    if backbone.depth != 50 or backbone.stage_blocks != (3, 4, 6, 3):
        raise ArchSpecError("arch.backbone.depth", "only ResNet-50 (stage_blocks [3, 4, 6, 3]) is supported")
    for stage in backbone.dcn_stages:
        if stage not in (1, 2, 3, 4):
            raise ArchSpecError("arch.backbone.dcn_stages", f"stage {stage} is not in 1..4")
    attention = backbone.attention
    if attention is not None:
        if len(attention.type) != 4 or set(attention.type) - {"0", "1"} or attention.type == "0000":
            raise ArchSpecError("arch.backbone.attention.type", f"expected 4 bits such as '1111', got {attention.type!r}")
        if any(stage not in (1, 2, 3, 4) for stage in attention.stages):
            raise ArchSpecError("arch.backbone.attention.stages", "stages must be in 1..4")
        if attention.kv_stride < 1 or attention.num_heads < 1:
            raise ArchSpecError("arch.backbone.attention", "num_heads and kv_stride must be >= 1")
    if len(spec.anchors.strides) != spec.neck.num_outs:
        raise ArchSpecError("arch.anchors.strides", "needs one stride per FPN output")
    if spec.neck.num_outs != len(spec.neck.in_channels) + 1:
        raise ArchSpecError("arch.neck.num_outs", "only one extra level (P6 by subsampling) is supported")
