"""The Open Inference Protocol over HTTP, on the service port: ``/v2/...``.

Health (``/v2/health/live``, ``/v2/health/ready``), metadata (``/v2``, ``/v2/models/{model}``),
model readiness and inference, and Triton's extensions: model configuration
(``/v2/models/{model}/config``), statistics (``/v2/models/stats``, ``/v2/models/{model}/stats``)
and the model repository (``POST /v2/repository/index``, ``POST /v2/repository/models/{model}/load``
and ``/unload``, which need the admin token as ``POST /models/{v}/load`` does). The model routes
are also under ``/v2/models/{model}/versions/1/``.

An inference body is JSON, or, with the binary tensor data extension, a JSON header of
``Inference-Header-Content-Length`` bytes followed by the binary data of the inputs that declare
``binary_data_size``; outputs asked for as binary (``binary_data`` per output, or
``binary_data_output`` for all) follow the response's JSON header the same way. A request body may
come compressed (``Content-Encoding``, inflated by ``server.middleware``); an inference response
is compressed with gzip or deflate when ``Accept-Encoding`` asks for one, as Triton's are. Errors
are the protocol's ``{"error": "..."}`` (:data:`DOOR`: also for paths under ``/v2`` no route
serves) with ``/detect``'s status codes (``app/error_table.py``).
"""

from __future__ import annotations

import gzip
import json
import zlib
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Path, Request, Response
from pydantic import BaseModel, ValidationError

from model_zoo import UnknownVariantError

from ..core.errors import InvalidParameterError, TooManyImagesError, VariantNotReadyError, VariantNotServedError
from ..core.metrics import PROTOCOL_V2_HTTP
from ..core.pool import VariantSlot
from ..core.served_variant import ServedVariant
from ..error_bodies import CLIENT_CLOSED, message_body
from ..error_table import MODEL_ERRORS, UPLOAD_ERRORS, error_responses
from ..server.context import FrontDoor
from ..server.dependencies import ContextDep, MetricsDep, RecordDep, ServiceDep, SettingsDep
from ..server.disconnect import unless_disconnected
from ..server.head_admission import names_variant
from ..server.model_control import CONTROL_ERRORS, control, require_admin
from .contract import AUTO_MODEL, MODEL_VERSION, UnknownModelVersionError, auto_metadata, check_version, model_metadata, server_metadata
from .errors import ExtensionRequestError, InferenceRequestError, ServerNotReadyError
from .extensions import check_control_parameters, index_json, model_config, model_statistics, repository_index
from .inference import InputHeader, V2Request, check_inputs, infer, parse_parameters, requested_outputs
from .json_messages import http_json
from .schemas import (
    InferenceRequest,
    InferenceResponse,
    LiveResponse,
    ModelConfigResponse,
    ModelMetadataResponse,
    ModelStatisticsResponse,
    ReadyResponse,
    RepositoryIndexEntry,
    RepositoryIndexRequest,
    RepositoryModelRequest,
    RequestInput,
    ServerMetadataResponse,
    V2ErrorResponse,
)
from .tensors import bytes_from_json, bytes_from_raw, datatype_of, to_json, to_raw

PATH_PREFIX = "/v2"
HEADER_LENGTH = "Inference-Header-Content-Length"
BINARY_MEDIA_TYPE = "application/octet-stream"
RESPONSE_CODINGS = ("gzip", "deflate")  # Accept-Encoding an inference response is compressed with
DOOR = FrontDoor(PATH_PREFIX, PROTOCOL_V2_HTTP, message_body)
ParsedBody = TypeVar("ParsedBody", bound=BaseModel)

router = APIRouter(
    prefix=PATH_PREFIX,
    tags=["v2 (Open Inference Protocol)"],
    responses=error_responses(UnknownVariantError, UnknownModelVersionError, body=V2ErrorResponse),
)

ModelPath = Annotated[str, Path(description="variant alias or full name, e.g. attn1111-dcn")]
VersionPath = Annotated[str, Path(description='the only version is "1"')]


async def get_slot(model: ModelPath, service: ServiceDep, record: RecordDep) -> VariantSlot:
    """The registry variant named ``model`` (404 when there is none), recorded for the access log."""
    slot = service.pool.slot(model)
    record.variant = slot.variant
    return slot


async def check_version_path(model: ModelPath, version: VersionPath) -> None:
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


@router.get("", response_model=ServerMetadataResponse, summary="Server metadata: name, the build's version, extensions")
async def get_server_metadata() -> Any:
    return server_metadata()


# Config and statistics are Triton's JSON of the messages (json_messages), documented, not filtered, by their models.
_STATISTICS_ANSWER: dict[Any, Any] = {200: {"model": ModelStatisticsResponse, "description": "Triton's ModelStatisticsResponse"}}


# Before /models/{model}: "stats" is not a model's name.
@router.get(
    "/models/stats",
    summary="Inference statistics of every loaded variant (Triton's statistics extension)",
    responses=_STATISTICS_ANSWER,
)
async def get_all_statistics(service: ServiceDep) -> Any:
    return http_json(model_statistics(service, None, None))


_STATS: dict[Any, Any] = {
    "summary": "Inference statistics of a loaded variant (Triton's statistics extension)",
    "responses": {
        **error_responses(VariantNotServedError, VariantNotReadyError, ExtensionRequestError, body=V2ErrorResponse),
        **_STATISTICS_ANSWER,
    },
}


@router.get("/models/{model}/stats", **_STATS)
@router.get("/models/{model}/versions/{version}/stats", **_STATS, dependencies=VERSIONED)
async def get_statistics(model: ModelPath, service: ServiceDep, record: RecordDep) -> Any:
    answer = model_statistics(service, model, None)
    record.variant = answer.model_stats[0].name
    return http_json(answer)


_CONFIG: dict[Any, Any] = {
    "summary": "Model configuration, as Triton's (the model configuration extension)",
    "responses": {200: {"model": ModelConfigResponse, "description": "Triton's ModelConfig"}},
}


@router.get("/models/{model}/config", **_CONFIG)
@router.get("/models/{model}/versions/{version}/config", **_CONFIG, dependencies=VERSIONED)
async def get_model_config(model: ModelPath, service: ServiceDep, record: RecordDep) -> Any:
    config = model_config(service, model, None)
    record.variant = config.name if config.name != AUTO_MODEL else ""
    return http_json(config)


@router.get("/models/{model}", response_model=ModelMetadataResponse, summary="Model metadata")
@router.get("/models/{model}/versions/{version}", response_model=ModelMetadataResponse, summary="Model metadata", dependencies=VERSIONED)
async def get_model_metadata(model: ModelPath, service: ServiceDep, settings: SettingsDep, record: RecordDep) -> Any:
    if model == AUTO_MODEL:
        return auto_metadata(settings.default_budget_ms).to_dict()
    return model_metadata(await get_slot(model, service, record)).to_dict()


_READY: dict[Any, Any] = {"response_model": ReadyResponse, "responses": error_responses(VariantNotReadyError, body=V2ErrorResponse)}


@router.get("/models/{model}/ready", summary="Model readiness (503 while not loaded)", **_READY)
@router.get("/models/{model}/versions/{version}/ready", summary="Model readiness", dependencies=VERSIONED, **_READY)
async def get_model_ready(served: ServedDep) -> Any:
    return {"ready": True}


_INFER: dict[Any, Any] = {
    "summary": "Detect objects in a batch of images",
    "response_model": InferenceResponse,
    "responses": error_responses(*MODEL_ERRORS, *UPLOAD_ERRORS, InvalidParameterError, InferenceRequestError, TooManyImagesError, body=V2ErrorResponse),
    "openapi_extra": {
        "requestBody": {
            "required": True,
            "description": "an inference request: input IMAGE (BYTES, shape [B, 1] or [B], base64 strings in JSON), parameters "
            f"score_thr, max_dets, classes; or, with the binary tensor data extension, its JSON header ({HEADER_LENGTH} "
            "bytes) followed by the binary data of the inputs that declare binary_data_size; may be sent with "
            "Content-Encoding gzip or deflate",
            "content": {"application/json": {"schema": {"type": "object"}}, BINARY_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}},
        }
    },
}  # fmt: skip


@router.post("/models/{model}/infer", **_INFER)
@router.post("/models/{model}/versions/{version}/infer", **_INFER, dependencies=VERSIONED)
@names_variant(model_named)
async def infer_route(request: Request, model: ModelPath, service: ServiceDep, context: ContextDep) -> Any:
    ticket = context.ticket
    if ticket is None and model != AUTO_MODEL:  # an unknown model first (404); refused before reading the body when overloaded
        ticket = service.open_ticket(model, record=context.record)
        context.tickets.append(ticket)
    body = await request.body()
    infer_request, binary_outputs = parse_body(body, request.headers.get(HEADER_LENGTH))
    if ticket is None:  # auto: chosen for the request's budget
        ticket = service.open_ticket(model, record=context.record, budget_s=infer_request.parameters.budget_s)
        context.tickets.append(ticket)
    arrays = await unless_disconnected(request, infer(service, ticket, infer_request))
    if arrays is None:
        return Response(status_code=CLIENT_CLOSED)  # nobody is listening; for the log and metrics
    return render(ticket.variant, infer_request.id, arrays, binary_outputs, request.headers.get("accept-encoding"))


def parse_body(body: bytes, header_length: str | None) -> tuple[V2Request, dict[str, bool]]:
    """An inference body (inflated already) → the request, and which of its outputs go as binary data.

    Raises:
        InferenceRequestError: a bad header length, JSON that is not an inference request, inputs
        the model does not take; TensorDataError; InvalidParameterError.
    """
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
    image = check_inputs([InputHeader(t.name, t.datatype, tuple(t.shape)) for t in document.inputs])
    parameters = parse_parameters(document.parameters)
    asked = {output.name: output.parameters for output in document.outputs}
    binary_outputs = {
        name: _binary_flag(asked.get(name, {}), default=parameters.binary_output)
        for name in requested_outputs([output.name for output in document.outputs])
    }
    images = image_bytes(document.inputs[0], memoryview(body)[split:], image.count)
    return V2Request(document.id, images, image.rows, parameters, list(binary_outputs)), binary_outputs


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


def render(model: str, request_id: str | None, arrays: dict[str, Any], binary: dict[str, bool], accept_encoding: str | None) -> Response:
    """The inference response: JSON, or with binary outputs, its JSON header and their data;
    compressed as ``accept_encoding`` asks (``Inference-Header-Content-Length`` counts the header
    uncompressed, as Triton's clients read it)."""
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
    headers = {"Vary": "Accept-Encoding"}
    if chunks:
        headers[HEADER_LENGTH] = str(len(header))
    body = b"".join([header, *chunks])
    coding = response_coding(accept_encoding)
    if coding is not None:
        body = gzip.compress(body, compresslevel=6, mtime=0) if coding == "gzip" else zlib.compress(body, 6)
        headers["Content-Encoding"] = coding
    return Response(body, media_type=BINARY_MEDIA_TYPE if chunks else "application/json", headers=headers)


def response_coding(accept_encoding: str | None) -> str | None:
    """The coding of :data:`RESPONSE_CODINGS` that ``Accept-Encoding`` prefers (the highest q, then
    the first listed); None: none is accepted (``q=0`` refuses one)."""
    best: tuple[float, str] | None = None
    for part in (accept_encoding or "").split(","):
        coding, _, parameters = part.partition(";")
        coding = coding.strip().lower()
        if coding not in RESPONSE_CODINGS:
            continue
        quality = 1.0
        name, _, value = parameters.partition("=")
        if name.strip().lower() == "q":
            try:
                quality = float(value)
            except ValueError:
                quality = 0.0
        if quality > 0 and (best is None or quality > best[0]):
            best = (quality, coding)
    return best[1] if best is not None else None


def _binary_flag(parameters: dict[str, Any], *, default: bool) -> bool:
    flag = parameters.get("binary_data", default)
    if not isinstance(flag, bool):
        raise InferenceRequestError(f"output parameter binary_data must be a boolean; got {flag!r}")
    return flag


# -- model repository ---------------------------------------------------------------------------


# Their bodies are JSON whatever the Content-Type says (Triton's clients send none, or another), and may be empty.


def _body_of(model: type[BaseModel], description: str) -> dict[str, Any]:
    schema = {"application/json": {"schema": model.model_json_schema()}}
    return {"requestBody": {"required": False, "description": description, "content": schema}}


async def _parsed(request: Request, model: type[ParsedBody], what: str) -> ParsedBody:
    """The request's JSON body as ``model`` (no body: its defaults). Raises ExtensionRequestError."""
    try:
        return model.model_validate_json(await request.body() or b"{}")
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors(include_url=False)[:5])
        raise ExtensionRequestError(f"not {what}: {problems}") from None


@router.post(
    "/repository/index",
    response_model=list[RepositoryIndexEntry],
    response_model_exclude_none=True,
    summary="Every registry variant with its state: READY, LOADING, or UNAVAILABLE with the reason",
    responses=error_responses(ExtensionRequestError, body=V2ErrorResponse),
    openapi_extra=_body_of(RepositoryIndexRequest, '{"ready": true}: only the variants that are READY'),
)
async def post_repository_index(request: Request, service: ServiceDep) -> Any:
    body = await _parsed(request, RepositoryIndexRequest, "a repository index request")
    return index_json(repository_index(service, ready_only=body.ready))


_CONTROL: dict[Any, Any] = {
    "dependencies": [Depends(require_admin)],
    "responses": {
        **error_responses(*CONTROL_ERRORS, ExtensionRequestError, body=V2ErrorResponse),
        200: {"description": "done (an empty body, as Triton's)", "content": {"application/json": {}}},
    },
    "openapi_extra": _body_of(RepositoryModelRequest, "parameters: none is taken but unload_dependents (unload)"),
}  # fmt: skip


@router.post("/repository/models/{model}/load", summary="Load (or reload) a variant, as POST /models/{variant}/load (admin token)", **_CONTROL)
async def post_repository_load(request: Request, model: ModelPath, service: ServiceDep, metrics: MetricsDep, record: RecordDep) -> Any:
    body = await _parsed(request, RepositoryModelRequest, "a repository load request")
    check_control_parameters("load", body.parameters)
    await control("load", model, service, metrics, record)
    return Response(media_type="application/json")


@router.post("/repository/models/{model}/unload", summary="Unload a variant, as POST /models/{variant}/unload (admin token)", **_CONTROL)
async def post_repository_unload(request: Request, model: ModelPath, service: ServiceDep, metrics: MetricsDep, record: RecordDep) -> Any:
    body = await _parsed(request, RepositoryModelRequest, "a repository unload request")
    check_control_parameters("unload", body.parameters)
    await control("unload", model, service, metrics, record)
    return Response(media_type="application/json")
