"""One v2 inference request, whichever transport carried it.

A transport decodes its own framing into a :class:`V2Request` (:func:`check_inputs` for the IMAGE
input's header, the tensors module for its B encoded images, :func:`parse_parameters`,
:func:`requested_outputs`), runs it with :func:`infer` on the request's ticket, and renders the
output tensors it gets back. Nothing here knows HTTP or gRPC.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from ..core.errors import InvalidParameterError
from model_zoo import DetectionResult

from ..core.requests import DetectParams, DetectRequest, parse_classes
from ..core.service import InferenceService
from ..core.ticket import Ticket
from .contract import IMAGE_INPUT, OUTPUT_BY_NAME, OUTPUTS, ParameterValue
from .errors import InferenceRequestError
from .tensors import element_count

DETECT_PARAMETERS = (
    "score_thr (number in [0, 1]), max_dets (integer >= 0), classes (COCO names or category ids, comma-separated), "
    "budget_ms (number > 0, for the model auto)"
)
# Parameters Triton's clients send on their own: honoured (timeout, binary_data_output) or ignored (priority).
PROTOCOL_PARAMETERS = ("binary_data_output", "timeout", "priority")
_MICROSECONDS = 1e-6


@dataclass(frozen=True)
class InputHeader:
    """An input tensor as the request declares it, before its data is read."""

    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class RequestParameters:
    """The request-level parameters: the detection filters and the protocol's own."""

    detect: DetectParams
    timeout_s: float | None = None  # the client's ``timeout`` (sent in microseconds, Triton's unit)
    binary_output: bool = False  # ``binary_data_output`` (HTTP): every output as binary data
    budget_s: float | None = None  # ``budget_ms`` for the model ``auto`` (None: the service's default)


@dataclass(frozen=True)
class V2Request:
    """An inference request as both transports parse it."""

    id: str | None
    images: list[bytes]  # the B encoded images of IMAGE
    parameters: RequestParameters
    outputs: list[str]  # the outputs to send, in order


def check_inputs(inputs: Sequence[InputHeader]) -> int:
    """B, the number of images of the request's only input, IMAGE.

    Raises:
        InferenceRequestError: no IMAGE, another input, a datatype other than BYTES, a shape
        other than [B] with B >= 1.
    """
    names = [tensor.name for tensor in inputs]
    for name in names:
        if name != IMAGE_INPUT:
            raise InferenceRequestError(f"unexpected input {name!r}; the model takes one input, {IMAGE_INPUT!r}")
    if names.count(IMAGE_INPUT) != 1:
        what = "is missing" if not names else "is given more than once"
        raise InferenceRequestError(f"input {IMAGE_INPUT!r} {what}; expected one: datatype BYTES, shape [B], B encoded images")
    image = inputs[0]
    if image.datatype != "BYTES":
        raise InferenceRequestError(
            f"input {IMAGE_INPUT!r} has datatype {image.datatype}; expected BYTES (encoded images: JPEG, PNG, ...)"
        )
    if len(image.shape) != 1 or image.shape[0] < 1:
        raise InferenceRequestError(
            f"input {IMAGE_INPUT!r} has shape {list(image.shape)}; expected [B] with B >= 1, one encoded image per element"
        )
    return element_count(image.shape)


def parse_parameters(parameters: Mapping[str, ParameterValue]) -> RequestParameters:
    """Request parameters → what the core and the transport need.

    Raises:
        InvalidParameterError (as ``/detect``'s): an unknown name, or a value of the wrong type
        or range; the message names the valid ones.
    """
    unknown = sorted(set(parameters) - {"score_thr", "max_dets", "classes", "budget_ms", *PROTOCOL_PARAMETERS})
    if unknown:
        raise InvalidParameterError(
            f"unknown parameter {unknown[0]!r}; valid: {DETECT_PARAMETERS}; and the protocol's {', '.join(PROTOCOL_PARAMETERS)}"
        )
    score_thr = parameters.get("score_thr", DetectParams.score_thr)
    if not _is_number(score_thr) or not 0.0 <= float(score_thr) <= 1.0:
        raise InvalidParameterError(f"parameter 'score_thr' must be a number in [0, 1]; got {score_thr!r}")
    max_dets = parameters.get("max_dets")
    if max_dets is not None and (not _is_integer(max_dets) or max_dets < 0):
        raise InvalidParameterError(f"parameter 'max_dets' must be an integer >= 0; got {max_dets!r}")
    classes = parameters.get("classes")
    if classes is not None and not isinstance(classes, str):
        raise InvalidParameterError(f"parameter 'classes' must be a string of names or ids, comma-separated; got {classes!r}")
    budget_ms = parameters.get("budget_ms")
    if budget_ms is not None and (not _is_number(budget_ms) or not float(budget_ms) > 0):
        raise InvalidParameterError(f"parameter 'budget_ms' must be a number > 0; got {budget_ms!r}")
    timeout_us = parameters.get("timeout")
    if timeout_us is not None and (not _is_integer(timeout_us) or timeout_us <= 0):
        raise InvalidParameterError(f"parameter 'timeout' must be an integer number of microseconds > 0; got {timeout_us!r}")
    binary_output = parameters.get("binary_data_output", False)
    if not isinstance(binary_output, bool):
        raise InvalidParameterError(f"parameter 'binary_data_output' must be a boolean; got {binary_output!r}")
    return RequestParameters(
        DetectParams(float(score_thr), max_dets, parse_classes([classes] if classes is not None else None)),
        timeout_s=timeout_us * _MICROSECONDS if timeout_us is not None else None,
        binary_output=binary_output,
        budget_s=float(budget_ms) / 1000.0 if budget_ms is not None else None,
    )


def requested_outputs(names: Sequence[str]) -> list[str]:
    """The outputs to send, in the order asked; none asked: all four.

    Raises:
        InferenceRequestError: an unknown or repeated name.
    """
    if not names:
        return list(OUTPUT_BY_NAME)
    for name in names:
        if name not in OUTPUT_BY_NAME:
            raise InferenceRequestError(f"unknown output {name!r}; the outputs are {', '.join(OUTPUT_BY_NAME)}")
    if len(set(names)) != len(names):
        raise InferenceRequestError(f"an output is requested more than once: {list(names)}")
    return list(names)


async def infer(service: InferenceService, ticket: Ticket, request: V2Request) -> dict[str, np.ndarray]:
    """Run ``request`` on ``ticket``'s variant; the output tensors it asked for, in its order.

    Raises:
        the errors of ``InferenceService.detect`` (bad image, queue full, deadline, ...).
    """
    ticket.shorten_deadline(request.parameters.timeout_s)
    outcome = await service.detect(ticket, DetectRequest(request.images, request.parameters.detect))
    arrays = detection_outputs([image.result for image in outcome.images])
    return {name: arrays[name] for name in request.outputs}


def detection_outputs(results: Sequence[DetectionResult]) -> dict[str, np.ndarray]:
    """The four output tensors of B images' detections (in :data:`~contract.OUTPUTS` order).

    Returns:
        num_detections Tensor[B] int32; detection_boxes Tensor[B, K, 4] float32, (x1, y1, x2, y2)
        in original-image pixels; detection_scores Tensor[B, K] float32; detection_classes
        Tensor[B, K] int32 (labels 0..79). K = the largest count; rows past a count are zero.
    """
    counts = [len(result.detections) for result in results]
    batch, most = len(results), max(counts, default=0)
    boxes = np.zeros((batch, most, 4), dtype=np.float32)
    scores = np.zeros((batch, most), dtype=np.float32)
    classes = np.zeros((batch, most), dtype=np.int32)
    for row, result in enumerate(results):
        detections = result.detections
        if detections:  # float64 values of the model's float32 outputs: exact in float32
            boxes[row, : len(detections)] = [d.bbox for d in detections]
            scores[row, : len(detections)] = [d.score for d in detections]
            classes[row, : len(detections)] = [d.label for d in detections]
    arrays = (np.asarray(counts, dtype=np.int32), boxes, scores, classes)
    return {spec.name: array for spec, array in zip(OUTPUTS, arrays)}


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
