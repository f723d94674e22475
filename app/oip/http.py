"""The Open Inference Protocol over HTTP, on the service port: ``/v2/...``.

Health (``/v2/health/live``, ``/v2/health/ready``), metadata (``/v2``, ``/v2/models/{model}``),
model readiness and inference, the model routes also under ``/v2/models/{model}/versions/1/``.
An inference body is JSON, or, with the binary tensor data extension, a JSON header of
``Inference-Header-Content-Length`` bytes followed by the binary data of the inputs that declare
``binary_data_size``; outputs asked for as binary (``binary_data`` per output, or
``binary_data_output`` for all) follow the response's JSON header the same way. Errors are the
protocol's ``{"error": "..."}`` (:data:`DOOR`: also for paths under ``/v2`` no route serves) with
``/detect``'s status codes (``app/error_table.py``).
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request, Response
from pydantic import ValidationError

from model_zoo import UnknownVariantError

from ..core.errors import InvalidParameterError, TooManyImagesError, VariantNotReadyError
from ..core.metrics import PROTOCOL_V2_HTTP
from ..core.pool import VariantSlot
from ..core.served_variant import ServedVariant
from ..core.variant_choice import AUTO_VARIANT
from ..error_bodies import CLIENT_CLOSED, message_body
from ..error_table import MODEL_ERRORS, UPLOAD_ERRORS, error_responses
from ..server.context import FrontDoor
from ..server.dependencies import ContextDep, RecordDep, ServiceDep, SettingsDep
from ..server.disconnect import unless_disconnected
from ..server.head_admission import names_variant
from .contract import MODEL_VERSION, UnknownModelVersionError, check_version, model_metadata, server_metadata
from .errors import InferenceRequestError, ServerNotReadyError
from .inference import InputHeader, V2Request, check_inputs, infer, parse_parameters, requested_outputs
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

PATH_PREFIX = "/v2"
HEADER_LENGTH = "Inference-Header-Content-Length"
BINARY_MEDIA_TYPE = "application/octet-stream"
DOOR = FrontDoor(PATH_PREFIX, PROTOCOL_V2_HTTP, message_body)

router = APIRouter(
    prefix=PATH_PREFIX,
    tags=["v2 (Open Inference Protocol)"],
    responses=error_responses(UnknownVariantError, UnknownModelVersionError, body=V2ErrorResponse),
)

ModelPath = Annotated[str, Path(description="variant alias or full name, e.g. attn1111-dcn")]


async def get_slot(model: ModelPath, service: ServiceDep, record: RecordDep) -> VariantSlot:
    """The registry variant named ``model`` (404 when there is none), recorded for the access log."""
    slot = service.pool.slot(model)
    record.variant = slot.variant
    return slot


async def check_version_path(model: ModelPath, version: Annotated[str, Path(description='the only version is "1"')]) -> None:
    check_version(model, version)


async def get_served(slot: Annotated[VariantSlot, Depends(get_slot)], service: ServiceDep) -> ServedVariant:
    """A loaded variant (503 while it is loading or when it is unavailable)."""
    return service.pool.served(slot.variant)


SlotDep = Annotated[VariantSlot, Depends(get_slot)]
ServedDep = Annotated[ServedVariant, Depends(get_served)]
VERSIONED = [Depends(check_version_path)]  # the routes under /versions/{version}


def model_named(path_params: Any, query: Any) -> str | None:
    """The variant an inference request's path names; None for a version other than 1 (a 404)."""
    version = path_params.get("version")
    return None if version not in (None, MODEL_VERSION) else path_params.get("model")


@router.get("/health/live", response_model=LiveResponse, summary="Liveness: the process answers")
async def live() -> Any:
    return {"live": True}


@router.get(
    "/health/ready",
    response_model=ReadyResponse,
    summary="Readiness: every requested variant is loaded (ATTNZOO_STRICT_READINESS=false: at least one)",
    responses=error_responses(ServerNotReadyError, body=V2ErrorResponse),
)
async def ready(service: ServiceDep, settings: SettingsDep) -> Any:
    pool = service.pool
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
async def get_model_ready(served: ServedDep) -> Any:
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
@names_variant(model_named)
async def infer_route(request: Request, model: ModelPath, service: ServiceDep, context: ContextDep) -> Any:
    ticket = context.ticket
    if ticket is None and model != AUTO_VARIANT:  # an unknown model first (404); refused before reading the body when overloaded
        ticket = service.open_ticket(model, record=context.record)
        context.tickets.append(ticket)
    body = await request.body()
    infer_request, binary_outputs = parse_body(body, request.headers.get(HEADER_LENGTH), request.headers.get("content-encoding"))
    if ticket is None:  # auto: chosen for the request's budget
        ticket = service.open_ticket(model, record=context.record, budget_s=infer_request.parameters.budget_s)
        context.tickets.append(ticket)
    arrays = await unless_disconnected(request, infer(service, ticket, infer_request))
    if arrays is None:
        return Response(status_code=CLIENT_CLOSED)  # nobody is listening; for the log and metrics
    return render(ticket.variant, infer_request.id, arrays, binary_outputs)


def parse_body(body: bytes, header_length: str | None, content_encoding: str | None) -> tuple[V2Request, dict[str, bool]]:
    """An inference body → the request, and which of its outputs go as binary data.

    Raises:
        InferenceRequestError: a compressed body, a bad header length, JSON that is not an
        inference request, inputs the model does not take; TensorDataError; InvalidParameterError.
    """
    if content_encoding not in (None, "", "identity"):
        raise InferenceRequestError(f"Content-Encoding {content_encoding!r} is not supported; send the request uncompressed")
    split = len(body)
    if header_length is not None:
        if not header_length.strip().isdigit() or int(header_length) > len(body):
            raise InferenceRequestError(f"{HEADER_LENGTH} is {header_length!r}; expected the JSON header's length, at most the body's {len(body)} bytes")
        split = int(header_length)
    try:
        document = InferenceRequest.model_validate_json(body[:split])
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors(include_url=False)[:5])
        raise InferenceRequestError(f"not an inference request: {problems}") from None
    count = check_inputs([InputHeader(t.name, t.datatype, tuple(t.shape)) for t in document.inputs])
    parameters = parse_parameters(document.parameters)
    asked = {output.name: output.parameters for output in document.outputs}
    binary_outputs = {
        name: _binary_flag(asked.get(name, {}), default=parameters.binary_output)
        for name in requested_outputs([output.name for output in document.outputs])
    }
    images = image_bytes(document.inputs[0], memoryview(body)[split:], count)
    return V2Request(document.id, images, parameters, list(binary_outputs)), binary_outputs


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
