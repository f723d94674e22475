"""The contract of the Open Inference Protocol front door: what the server and each variant
declare, as plain values that both transports render (JSON over HTTP, protobuf over gRPC).

Every variant is one model, named by its alias (``attn1111-dcn``) or its full name, with one
version, ``"1"``; ``auto`` is one more, which runs each request on the variant chosen for its
latency budget. Its input and outputs (the output names of TensorRT's EfficientNMS, which Triton
detection clients already parse), as Triton declares a model that batches (``model_config.py``)::

    IMAGE              BYTES  [B, 1]     B encoded images (any format /detect takes); [B] is taken too
    num_detections     INT32  [B, 1]     detections kept per image; [B] when the request sent IMAGE as [B]
    detection_boxes    FP32   [B, K, 4]  (x1, y1, x2, y2) in original-image pixels
    detection_scores   FP32   [B, K]     descending per image
    detection_classes  INT32  [B, K]     mmdet label 0..79 (names: parameter ``class_names``)

K is the largest count in the batch; rows past an image's ``num_detections`` are zero.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from model_zoo import COCO_CLASSES, build_info

from ..core.pool import VariantSlot
from ..core.requests import DEFAULT_SCORE_THR
from ..core.variant_choice import AUTO_VARIANT

SERVER_NAME = "attnzoo"
# The protocol's extensions served, by Triton's names: binary tensor data (HTTP; gRPC is always
# raw), model configuration, statistics, the model repository (index, load, unload), parameters.
EXTENSIONS = ("binary_tensor_data", "model_configuration", "statistics", "model_repository", "parameters")
PLATFORM = "pytorch"
MODEL_VERSION = "1"
AUTO_MODEL = AUTO_VARIANT  # the model that chooses a variant per request (by its budget_ms)
IMAGE_INPUT = "IMAGE"
NUM_DETECTIONS, DETECTION_BOXES, DETECTION_SCORES, DETECTION_CLASSES = (
    "num_detections", "detection_boxes", "detection_scores", "detection_classes"
)  # fmt: skip

ParameterValue = bool | int | float | str  # what a v2 parameter can hold (both transports)


class UnknownModelVersionError(LookupError):
    """A model version other than the one each variant has."""

    def __init__(self, model: str, version: str) -> None:
        super().__init__(f"model {model!r} has no version {version!r}; its only version is {MODEL_VERSION!r}")


@dataclass(frozen=True)
class TensorSpec:
    """Name, datatype and shape of one input or output; -1 marks B (images) or K (detections)."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


INPUTS = (TensorSpec(IMAGE_INPUT, "BYTES", (-1, 1)),)
OUTPUTS = (
    TensorSpec(NUM_DETECTIONS, "INT32", (-1, 1)),
    TensorSpec(DETECTION_BOXES, "FP32", (-1, -1, 4)),
    TensorSpec(DETECTION_SCORES, "FP32", (-1, -1)),
    TensorSpec(DETECTION_CLASSES, "INT32", (-1, -1)),
)
OUTPUT_BY_NAME = {spec.name: spec for spec in OUTPUTS}


def check_version(model: str, version: str | None) -> None:
    """Accept no version (empty or None) or :data:`MODEL_VERSION`. Raises UnknownModelVersionError."""
    if version and version != MODEL_VERSION:
        raise UnknownModelVersionError(model, version)


@dataclass(frozen=True)
class ServerMetadata:
    """``GET /v2`` / ``ServerMetadata``."""

    name: str
    version: str
    extensions: list[str]


def server_metadata() -> ServerMetadata:
    """The server's name, the build's version (``model_zoo.build_info``) and the extensions."""
    return ServerMetadata(SERVER_NAME, build_info().version, list(EXTENSIONS))


@dataclass(frozen=True)
class ModelMetadata:
    """``GET /v2/models/{model}`` / ``ModelMetadata``."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    parameters: dict[str, ParameterValue]

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "versions": self.versions,
            "platform": self.platform,
            "inputs": [spec.to_dict() for spec in self.inputs],
            "outputs": [spec.to_dict() for spec in self.outputs],
            "parameters": self.parameters,
        }


def model_metadata(slot: VariantSlot) -> ModelMetadata:
    """The metadata of one registry variant, loaded or not."""
    return ModelMetadata(slot.variant, [MODEL_VERSION], PLATFORM, list(INPUTS), list(OUTPUTS), model_parameters(slot))


def auto_metadata(default_budget_ms: float) -> ModelMetadata:
    """The metadata of the model ``auto``: the contract's tensors, and what it chooses by."""
    parameters: dict[str, ParameterValue] = {
        "class_names": ",".join(COCO_CLASSES),
        "default_score_thr": DEFAULT_SCORE_THR,
        "default_budget_ms": default_budget_ms,
    }
    return ModelMetadata(AUTO_MODEL, [MODEL_VERSION], PLATFORM, list(INPUTS), list(OUTPUTS), parameters)


def model_parameters(slot: VariantSlot) -> dict[str, ParameterValue]:
    """Facts about a variant a client may want: its names, the 80 class names in label order
    (comma-separated; ``detection_classes`` indexes them), the default ``score_thr``, its state,
    the sha256 of its weights once loaded, and the metafile's published figures (``published_*``).
    Figures the metafile does not give are left out (a v2 parameter has no null)."""
    entry = slot.entry
    published = {f"published_{name}": value for name, value in dataclasses.asdict(entry.published).items()}
    values: dict[str, ParameterValue | None] = {
        "variant": entry.alias,
        "full_name": entry.name,
        "class_names": ",".join(COCO_CLASSES),
        "default_score_thr": DEFAULT_SCORE_THR,
        "state": slot.state.value,
        "sha256": slot.served.sha256 if slot.served is not None else None,
        "weights_source": slot.served.weights_source if slot.served is not None else None,
        **published,
        "published_fps": entry.published.fps,
    }
    return {name: value for name, value in values.items() if value is not None}
