"""The Open Inference Protocol over HTTP, on the service port: ``/v2/...``.

Health (``/v2/health/live``, ``/v2/health/ready``), metadata (``/v2``, ``/v2/models/{model}``),
model readiness and inference, the model routes also under ``/v2/models/{model}/versions/1/``.
An inference body is JSON, or, with the binary tensor data extension, a JSON header of
``Inference-Header-Content-Length`` bytes followed by the binary data of the inputs that declare
``binary_data_size``; outputs asked for as binary (``binary_data`` per output, or
``binary_data_output`` for all) follow the response's JSON header the same way. Errors are the
protocol's ``{"error": "..."}`` with ``/detect``'s status codes (``app/errors.py``).
"""

from __future__ import annotations

import json
import time
from contextlib import nullcontext
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request, Response
from pydantic import ValidationError

from model_zoo import UnknownVariantError

from ..admission import Place, place_for
from ..deps import MetricsDep, PoolDep, RecordDep, SettingsDep
from ..variant_choice import AUTO_VARIANT, lease_variant
from ..disconnect import unless_disconnected
from ..errors import CLIENT_CLOSED, MODEL_ERRORS, UPLOAD_ERRORS, V2_PATH_PREFIX, ServerNotReadyError, error_responses
from ..model_pool import VariantNotReadyError, VariantSlot
from ..variant_core import InvalidParameterError, VariantCore
from .inference import (
    InferenceRequestError,
    InputHeader,
    TooManyImagesError,
    deadline,
    detection_outputs,
    image_count,
    parse_parameters,
    requested_outputs,
    run,
)
from .metadata import MODEL_VERSION, UnknownModelVersionError, check_version, model_metadata, server_metadata
from .schemas import (
    InferenceRequest,
    InferenceResponse,
    LiveResponse,
    ModelMetadataResponse,
    ReadyResponse,
    RequestInput,
    ServerMetadataResponse,
    V2ErrorResponse,
)
from .tensors import bytes_from_json, bytes_from_raw, datatype_of, to_json, to_raw

HEADER_LENGTH = "Inference-Header-Content-Length"
BINARY_MEDIA_TYPE = "application/octet-stream"

router = APIRouter(
    prefix=V2_PATH_PREFIX,
    tags=["v2 (Open Inference Protocol)"],
    responses=error_responses(UnknownVariantError, UnknownModelVersionError, body=V2ErrorResponse),
)

ModelPath = Annotated[str, Path(description="variant alias or full name, e.g. attn1111-dcn")]


async def get_slot(model: ModelPath, pool: PoolDep, record: RecordDep) -> VariantSlot:
    """The registry variant named ``model`` (404 when there is none), recorded for the access log."""
    slot = pool.slot(model)
    record.variant = slot.variant
    return slot


async def check_version_path(model: ModelPath, version: Annotated[str, Path(description='the only version is "1"')]) -> None:
    check_version(model, version)


async def get_core(slot: Annotated[VariantSlot, Depends(get_slot)], pool: PoolDep) -> VariantCore:
    """The core of a loaded variant (503 while it is loading or when it is unavailable)."""
    return pool.core(slot.variant)


SlotDep = Annotated[VariantSlot, Depends(get_slot)]
CoreDep = Annotated[VariantCore, Depends(get_core)]
VERSIONED = [Depends(check_version_path)]  # the routes under /versions/{version}


@router.get("/health/live", response_model=LiveResponse, summary="Liveness: the process answers")
async def live() -> Any:
    return {"live": True}


@router.get(
    "/health/ready",
    response_model=ReadyResponse,
    summary="Readiness: every requested variant is loaded (ATTNZOO_STRICT_READINESS=false: at least one)",
    responses=error_responses(ServerNotReadyError, body=V2ErrorResponse),
)
async def ready(pool: PoolDep, settings: SettingsDep) -> Any:
    if not pool.is_ready(strict=settings.strict_readiness):  # as /readyz (ATTNZOO_STRICT_READINESS)
        raise ServerNotReadyError(pool.readiness())
    return {"ready": True}


@router.get("", response_model=ServerMetadataResponse, summary="Server metadata: name, version, extensions")
async def get_server_metadata(request: Request) -> Any:
    return server_metadata(request.app.version)


@router.get("/models/{model}", response_model=ModelMetadataResponse, summary="Model metadata")
@router.get("/models/{model}/versions/{version}", response_model=ModelMetadataResponse, summary="Model metadata", dependencies=VERSIONED)
async def get_model_metadata(slot: SlotDep) -> Any:
    return model_metadata(slot)


_READY = {"response_model": ReadyResponse, "responses": error_responses(VariantNotReadyError, body=V2ErrorResponse)}


@router.get("/models/{model}/ready", summary="Model readiness (503 while not loaded)", **_READY)
@router.get("/models/{model}/versions/{version}/ready", summary="Model readiness", dependencies=VERSIONED, **_READY)
async def get_model_ready(core: CoreDep) -> Any:
    return {"ready": True}


_INFER = {
    "summary": "Detect objects in a batch of images",
    "response_model": InferenceResponse,
    "responses": error_responses(*MODEL_ERRORS, *UPLOAD_ERRORS, InvalidParameterError, InferenceRequestError, TooManyImagesError, body=V2ErrorResponse),
    "openapi_extra": {
        "requestBody": {
            "required": True,
            "description": "an inference request: input IMAGE (BYTES, shape [B], base64 strings in JSON), parameters "
            f"score_thr, max_dets, classes; or, with the binary tensor data extension, its JSON header ({HEADER_LENGTH} "
            "bytes) followed by the binary data of the inputs that declare binary_data_size",
            "content": {"application/json": {"schema": {"type": "object"}}, BINARY_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}},
        }
    },
}  # fmt: skip


@router.post("/models/{model}/infer", **_INFER)
@router.post("/models/{model}/versions/{version}/infer", **_INFER, dependencies=VERSIONED)
async def infer(
    request: Request, model: ModelPath, pool: PoolDep, settings: SettingsDep, metrics: MetricsDep, record: RecordDep
) -> Any:
    place: Place | None = None  # a named model's place in its queue, held from before the body is read
    if model != AUTO_VARIANT:  # an unknown model first (404), and refuse before reading the body when overloaded
        place = place_for(request, pool.core((await get_slot(model, pool, record)).variant), settings.request_timeout_s)
    started = place.started if place is not None else time.monotonic()
    with place or nullcontext():
        body = await request.body()
        infer_request, binary = parse_body(body, request.headers.get(HEADER_LENGTH), request.headers.get("content-encoding"))
        count = image_count([InputHeader(t.name, t.datatype, tuple(t.shape)) for t in infer_request.inputs], max_images=settings.queue_size)
        parameters = parse_parameters(infer_request.parameters)
        asked = {output.name: output.parameters for output in infer_request.outputs}
        binary_outputs = {
            name: _binary_flag(asked.get(name, {}), default=parameters.binary_output)
            for name in requested_outputs([output.name for output in infer_request.outputs])
        }
        images = image_bytes(infer_request.inputs[0], binary, count)
        deadline_at = deadline(started, settings.request_timeout_s, parameters.timeout_s)
        budget_s = parameters.budget_s if parameters.budget_s is not None else settings.default_budget_ms / 1000.0
        with lease_variant(pool, model, budget_s=budget_s, record=record, metrics=metrics) as core:
            detected = run(core, images, parameters.detect, deadline_at, metrics, record, place.admission if place is not None else None)
            outcomes = await unless_disconnected(request, detected)
    if outcomes is None:
        return Response(status_code=CLIENT_CLOSED)  # nobody is listening; for the log and metrics
    arrays = detection_outputs(outcomes)
    return render(core.variant, infer_request.id, {name: arrays[name] for name in binary_outputs}, binary_outputs)


def parse_body(body: bytes, header_length: str | None, content_encoding: str | None) -> tuple[InferenceRequest, memoryview]:
    """An inference body → its JSON request and the binary data after it (empty without the
    binary extension).

    Raises:
        InferenceRequestError: a compressed body, a bad header length, JSON that is not an
        inference request.
    """
    if content_encoding not in (None, "", "identity"):
        raise InferenceRequestError(f"Content-Encoding {content_encoding!r} is not supported; send the request uncompressed")
    split = len(body)
    if header_length is not None:
        if not header_length.strip().isdigit() or int(header_length) > len(body):
            raise InferenceRequestError(f"{HEADER_LENGTH} is {header_length!r}; expected the JSON header's length, at most the body's {len(body)} bytes")
        split = int(header_length)
    try:
        infer_request = InferenceRequest.model_validate_json(body[:split])
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors(include_url=False)[:5])
        raise InferenceRequestError(f"not an inference request: {problems}") from None
    return infer_request, memoryview(body)[split:]


def image_bytes(image: RequestInput, binary: memoryview, count: int) -> list[bytes]:
    """The encoded images of the IMAGE input: from the binary data when it declares
    ``binary_data_size``, else from its JSON ``data`` (base64).

    Raises:
        InferenceRequestError: no data, or binary data whose size is not the declared one.
        TensorDataError: data that does not hold ``count`` well-formed elements.
    """
    size = image.parameters.get("binary_data_size")
    if size is None:
        if image.data is None:
            raise InferenceRequestError(
                f"input {image.name!r} has no data: give 'data' (base64 strings) or parameters.binary_data_size and the binary data"
            )
        if len(binary):
            raise InferenceRequestError(f"{len(binary)} bytes of binary data follow the JSON header, but no input declares binary_data_size")
        return bytes_from_json(image.name, image.data, count)
    if isinstance(size, bool) or not isinstance(size, int) or size != len(binary):
        raise InferenceRequestError(
            f"input {image.name!r} declares binary_data_size {size!r}; {len(binary)} bytes follow the JSON header"
        )
    return bytes_from_raw(image.name, binary.tobytes(), count)


def render(model: str, request_id: str | None, arrays: dict[str, Any], binary: dict[str, bool]) -> Response:
    """The inference response: JSON, or with binary outputs, its JSON header and their data."""
    outputs: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for name, array in arrays.items():
        output: dict[str, Any] = {"name": name, "datatype": datatype_of(array), "shape": list(array.shape)}
        if binary[name]:
            chunks.append(to_raw(array))
            output["parameters"] = {"binary_data_size": len(chunks[-1])}
        else:
            output["data"] = to_json(array)
        outputs.append(output)
    document: dict[str, Any] = {"model_name": model, "model_version": MODEL_VERSION, "outputs": outputs}
    if request_id is not None:
        document["id"] = request_id
    header = json.dumps(document, separators=(",", ":")).encode()
    if not chunks:
        return Response(header, media_type="application/json")
    return Response(b"".join([header, *chunks]), media_type=BINARY_MEDIA_TYPE, headers={HEADER_LENGTH: str(len(header))})


def _binary_flag(parameters: dict[str, Any], *, default: bool) -> bool:
    flag = parameters.get("binary_data", default)
    if not isinstance(flag, bool):
        raise InferenceRequestError(f"output parameter binary_data must be a boolean; got {flag!r}")
    return flag
