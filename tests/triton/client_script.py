"""Triton's Python clients against any server of the Open Inference Protocol (tritonserver or
``attnzoo serve``): infer on encoded images, and one fixed client script (metadata, config, infer,
statistics, repository index, over HTTP and gRPC) whose answers :func:`structure` summarises as
field names and types, so that two servers' answers can be compared field by field.

The IMAGE input is [B, 1] for a model whose configuration batches (``max_batch_size`` > 0: both
tritonserver and ``attnzoo serve``); ``attnzoo serve`` takes [B] too: ``image_shape`` says which
one to send.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Sequence

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

CLIENT_TIMEOUT_S = 300.0
ImageShape = Literal["rows", "flat"]  # [B, 1] or [B]
CLIENT_SCRIPT = ("metadata", "config", "infer", "statistics", "repository_index")


@dataclass(frozen=True)
class Detections:
    """One image's detections from the four v2 outputs: boxes [N, 4], scores [N], classes [N]."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray

    def __eq__(self, other: object) -> bool:  # bit for bit, dtypes included
        return isinstance(other, Detections) and all(
            a.dtype == b.dtype and np.array_equal(a, b) for a, b in zip(self.arrays(), other.arrays())
        )

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.boxes, self.scores, self.classes


def http_client(url: str) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(url, connection_timeout=CLIENT_TIMEOUT_S, network_timeout=CLIENT_TIMEOUT_S)


def image_input(module: Any, images: Sequence[bytes], image_shape: ImageShape) -> Any:
    """The IMAGE input of ``images`` for tritonclient.http or .grpc (``module``)."""
    array = np.array(list(images), dtype=np.object_)
    if image_shape == "rows":
        array = array.reshape(-1, 1)
    tensor = module.InferInput("IMAGE", list(array.shape), "BYTES")
    tensor.set_data_from_numpy(array)
    return tensor


def detections_of(result: Any) -> list[Detections]:
    """Each image's detections in an infer result (rows past ``num_detections`` dropped)."""
    counts = result.as_numpy("num_detections").reshape(-1)  # [B] or [B, 1]
    boxes, scores, classes = (result.as_numpy(name) for name in ("detection_boxes", "detection_scores", "detection_classes"))
    return [Detections(boxes[row, :count], scores[row, :count], classes[row, :count]) for row, count in enumerate(counts)]


def infer(
    module: Any, client: Any, model: str, images: Sequence[bytes], image_shape: ImageShape, parameters: dict[str, Any] | None = None
) -> list[Detections]:
    """One request carrying ``images``; each image's detections."""
    kwargs = {"client_timeout": CLIENT_TIMEOUT_S} if module is grpcclient else {}
    result = client.infer(model, [image_input(module, images, image_shape)], parameters=parameters, **kwargs)
    return detections_of(result)


def run_client_script(http_url: str, grpc_url: str, model: str, image: bytes, image_shape: ImageShape) -> dict[str, dict[str, Any]]:
    """The answers of the client script (:data:`CLIENT_SCRIPT`) for ``model``, by transport: HTTP's
    as the JSON tritonclient.http returns, gRPC's as tritonclient.grpc's ``as_json`` (protobuf's
    JSON mapping: 64-bit integers are strings, fields at their default value are left out)."""
    answers: dict[str, dict[str, Any]] = {}
    http = http_client(http_url)
    try:
        answers["http"] = {
            "metadata": http.get_model_metadata(model),
            "config": http.get_model_config(model),
            "infer": http.infer(model, [image_input(httpclient, [image], image_shape)]).get_response(),
            "statistics": http.get_inference_statistics(model),
            "repository_index": http.get_model_repository_index(),
        }
    finally:
        http.close()
    grpc = grpcclient.InferenceServerClient(grpc_url)
    try:
        answers["grpc"] = {
            "metadata": grpc.get_model_metadata(model, as_json=True),
            "config": grpc.get_model_config(model, as_json=True),
            "infer": grpc.infer(model, [image_input(grpcclient, [image], image_shape)], client_timeout=CLIENT_TIMEOUT_S).get_response(
                as_json=True
            ),
            "statistics": grpc.get_inference_statistics(model, as_json=True),
            "repository_index": grpc.get_model_repository_index(as_json=True),
        }
    finally:
        grpc.close()
    return answers


def structure(value: Any) -> Any:
    """``value``'s field names and types: a mapping keeps its keys (sorted) with their structure,
    a list becomes a one-element list of its elements' merged structure (``[]`` when empty), any
    other value its type's name (``int``, ``str``, ``bool``, ``float``, ``NoneType``).

    Keys that are names of their own (the ``parameters`` maps of a model configuration, whose keys
    are the model's parameter names) keep them: a comparison then checks those too."""
    if isinstance(value, dict):
        return {key: structure(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        merged: Any = None
        for item in value:
            merged = _merge(merged, structure(item))
        return [] if merged is None else [merged]
    return type(value).__name__


def _merge(left: Any, right: Any) -> Any:
    """The structure of values with structure ``left`` or ``right`` (types that differ: ``a|b``)."""
    if left is None:
        return right
    if right is None:
        return left
    if isinstance(left, dict) and isinstance(right, dict):
        return {key: _merge(left.get(key), right.get(key)) for key in sorted(set(left) | set(right))}
    if isinstance(left, list) and isinstance(right, list):
        return [_merge(left[0] if left else None, right[0] if right else None)] if left or right else []
    if left == right:
        return left
    names = set(str(left).split("|")) | set(str(right).split("|"))
    return "|".join(sorted(names))
