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

from model_zoo import DetectionResult

from ..core.errors import InvalidParameterError
from ..core.requests import DetectParams, DetectRequest, parse_classes
from ..core.service import InferenceService
from ..core.ticket import Ticket
from .contract import IMAGE_INPUT, NUM_DETECTIONS, OUTPUT_BY_NAME, OUTPUTS, ParameterValue
from .errors import InferenceRequestError

DETECT_PARAMETERS = (
    "score_thr (number in [0, 1]), max_dets (integer >= 0), classes (COCO names or category ids, comma-separated), "
    "budget_ms (number > 0, for the model auto); a number may be sent as a string holding it"
)
# Parameters of the protocol that Triton's clients send on their own: honoured (timeout, in
# microseconds; binary_data_output over HTTP) or, as Triton does for a model without priorities
# or sequences, accepted and ignored.
PROTOCOL_PARAMETERS = (
    "binary_data_output", "timeout", "priority", "sequence_id", "sequence_start", "sequence_end", "triton_enable_empty_final_response",
)  # fmt: skip
TRITON_PREFIX = "triton_"  # parameter names Triton reserves; the only one it accepts is in PROTOCOL_PARAMETERS
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
class ImageInput:
    """The IMAGE input as a request declares it: B images, as a column [B, 1] or flat [B]."""

    count: int
    rows: bool  # [B, 1] (what a client of a batching Triton model sends), else [B]


@dataclass(frozen=True)
class V2Request:
    """An inference request as both transports parse it."""

    id: str | None
    images: list[bytes]  # the B encoded images of IMAGE
    rows: bool  # IMAGE was [B, 1]: num_detections is answered as [B, 1] too
    parameters: RequestParameters
    outputs: list[str]  # the outputs to send, in order


def check_inputs(inputs: Sequence[InputHeader]) -> ImageInput:
    """The request's only input, IMAGE: its B images, as [B, 1] or [B].

    Raises:
        InferenceRequestError: no IMAGE, another input, a datatype other than BYTES, a shape
        other than [B, 1] or [B] with B >= 1.
    """
    names = [tensor.name for tensor in inputs]
    for name in names:
        if name != IMAGE_INPUT:
            raise InferenceRequestError(f"unexpected input {name!r}; the model takes one input, {IMAGE_INPUT!r}")
    if names.count(IMAGE_INPUT) != 1:
        what = "is missing" if not names else "is given more than once"
        raise InferenceRequestError(f"input {IMAGE_INPUT!r} {what}; expected one: datatype BYTES, shape [B, 1] or [B], B encoded images")
    image = inputs[0]
    if image.datatype != "BYTES":
        raise InferenceRequestError(
            f"input {IMAGE_INPUT!r} has datatype {image.datatype}; expected BYTES (encoded images: JPEG, PNG, ...)"
        )
    if len(image.shape) not in (1, 2) or image.shape[0] < 1 or image.shape[1:] not in ((), (1,)):
        raise InferenceRequestError(
            f"input {IMAGE_INPUT!r} has shape {list(image.shape)}; expected [B, 1] or [B] with B >= 1, one encoded image per row"
        )
    return ImageInput(image.shape[0], rows=len(image.shape) == 2)


def parse_parameters(parameters: Mapping[str, ParameterValue]) -> RequestParameters:
    """Request parameters → what the core and the transport need. A number may come as an integer,
    a float or a string holding it (KServe's gRPC client cannot send a float).

    Raises:
        InvalidParameterError (as ``/detect``'s): an unknown name, or a value of the wrong type
        or range; the message names the valid ones.
    """
    unknown = sorted(set(parameters) - {"score_thr", "max_dets", "classes", "budget_ms", *PROTOCOL_PARAMETERS})
    if unknown and unknown[0].startswith(TRITON_PREFIX):
        raise InvalidParameterError(
            f"parameter {unknown[0]!r}: names starting with {TRITON_PREFIX!r} are reserved for Triton; the only one "
            "accepted is triton_enable_empty_final_response"
        )
    if unknown:
        raise InvalidParameterError(
            f"unknown parameter {unknown[0]!r}; valid: {DETECT_PARAMETERS}; and the protocol's {', '.join(PROTOCOL_PARAMETERS)}"
        )
    score_thr = _number(parameters.get("score_thr", DetectParams.score_thr))
    if score_thr is None or not 0.0 <= score_thr <= 1.0:
        raise InvalidParameterError(f"parameter 'score_thr' must be a number in [0, 1]; got {parameters['score_thr']!r}")
    max_dets = _integer(parameters.get("max_dets"))
    if "max_dets" in parameters and (max_dets is None or max_dets < 0):
        raise InvalidParameterError(f"parameter 'max_dets' must be an integer >= 0; got {parameters['max_dets']!r}")
    classes = parameters.get("classes")
    if classes is not None and not isinstance(classes, str):
        raise InvalidParameterError(f"parameter 'classes' must be a string of names or ids, comma-separated; got {classes!r}")
    budget_ms = _number(parameters.get("budget_ms"))
    if "budget_ms" in parameters and (budget_ms is None or not budget_ms > 0):
        raise InvalidParameterError(f"parameter 'budget_ms' must be a number > 0; got {parameters['budget_ms']!r}")
    timeout_us = parameters.get("timeout")
    if timeout_us is not None and (isinstance(timeout_us, bool) or not isinstance(timeout_us, int) or timeout_us <= 0):
        raise InvalidParameterError(f"parameter 'timeout' must be an integer number of microseconds > 0; got {timeout_us!r}")
    priority = parameters.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int) or priority < 0:
        raise InvalidParameterError(f"parameter 'priority' must be an integer >= 0; got {priority!r}")
    sequence_id = parameters.get("sequence_id", 0)
    if isinstance(sequence_id, (bool, float)):
        raise InvalidParameterError(f"parameter 'sequence_id' must be an integer or a string; got {sequence_id!r}")
    for flag in ("binary_data_output", "sequence_start", "sequence_end", "triton_enable_empty_final_response"):
        if not isinstance(parameters.get(flag, False), bool):
            raise InvalidParameterError(f"parameter {flag!r} must be a boolean; got {parameters[flag]!r}")
    return RequestParameters(
        DetectParams(score_thr, max_dets, parse_classes([classes] if classes is not None else None)),
        timeout_s=timeout_us * _MICROSECONDS if timeout_us is not None else None,
        binary_output=parameters.get("binary_data_output") is True,
        budget_s=budget_ms / 1000.0 if budget_ms is not None else None,
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
    arrays = detection_outputs([image.result for image in outcome.images], rows=request.rows)
    return {name: arrays[name] for name in request.outputs}


def detection_outputs(results: Sequence[DetectionResult], *, rows: bool = False) -> dict[str, np.ndarray]:
    """The four output tensors of B images' detections (in :data:`~contract.OUTPUTS` order).

    Returns:
        num_detections Tensor[B, 1] int32 with ``rows``, else Tensor[B]; detection_boxes
        Tensor[B, K, 4] float32, (x1, y1, x2, y2) in original-image pixels; detection_scores
        Tensor[B, K] float32; detection_classes Tensor[B, K] int32 (labels 0..79). K = the
        largest count; rows past a count are zero.
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
    num_detections = np.asarray(counts, dtype=np.int32)
    arrays: dict[str, np.ndarray] = {NUM_DETECTIONS: num_detections.reshape(-1, 1) if rows else num_detections}
    for spec, array in zip(OUTPUTS[1:], (boxes, scores, classes)):
        arrays[spec.name] = array
    return arrays


def _number(value: ParameterValue | None) -> float | None:
    """A parameter's number: an int or a float, or a string holding one; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _integer(value: ParameterValue | None) -> int | None:
    """A parameter's whole number (``3``, ``3.0``, ``"3"``); None for anything else."""
    number = _number(value)
    return int(number) if number is not None and number.is_integer() else None

