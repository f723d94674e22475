"""Errors → answers: one table from exception type to HTTP status, error code, log level, gRPC status
code and description; the HTTP exception handlers that apply it, and the OpenAPI ``responses`` of
each route, generated from the same table.

Imported by the app factory (which installs the handlers) and by the front doors. Each front
door renders its own error body (``error_bodies``): the handlers ask the request's context which
door serves it. Unexpected exceptions are 500s whose body carries the request id that the log line
(with the traceback) carries too. Expected conditions of a running service (overloaded, deadline
passed, variant not loaded, shutting down) log one line, without a traceback.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Literal

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from model_zoo import AttentionQueryError, ImageDecodeError, UnknownVariantError

from .api.schemas import ErrorResponse
from .api.upload import UnsupportedMediaTypeError
from .core.decode import EmptyUploadError, NotAnImageError, TooManyPixelsError, UnsupportedFormatError
from .core.errors import (
    BatcherClosedError,
    ControlBusyError,
    DeadlineExceededError,
    ImageUnprocessableError,
    InvalidParameterError,
    ModelControlDisabledError,
    ModelExecutionError,
    NotAuthorizedError,
    NoVariantLoadedError,
    OverloadedError,
    ServiceNotStartedError,
    TooManyImagesError,
    VariantNotReadyError,
    VariantNotServedError,
    WeightsRefusedError,
)
from .error_bodies import CLIENT_CLOSED, REQUEST_ID_HEADER, RETRY_AFTER_HEADER, detail_body
from .oip.contract import UnknownModelVersionError
from .oip.errors import ExtensionRequestError, InferenceRequestError, ServerNotReadyError, TensorDataError
from .server.context import context_of
from .server.middleware import BodyTooLargeError, ContentDecodingError, RequestBodyTimeoutError, UnsupportedContentEncodingError

logger = logging.getLogger("attnzoo.errors")

Code = grpc.StatusCode


@dataclass(frozen=True)
class ErrorSpec:
    status: int
    code: str
    description: str  # for the OpenAPI docs: when a route answers this
    grpc_code: grpc.StatusCode
    log: Literal["none", "line", "traceback"] = "none"  # besides the access log line
    close_connection: bool = False  # answer with Connection: close


# Most specific first: the first entry the exception is an instance of wins.
ERROR_TABLE: dict[type[Exception], ErrorSpec] = {
    UnknownVariantError: ErrorSpec(404, "unknown_variant", "unknown variant (the body lists the valid ones)", Code.NOT_FOUND),
    # 404, not 503: it never loads in this process, so there is nothing to retry (no Retry-After)
    VariantNotServedError: ErrorSpec(404, "variant_not_served", "a registry variant this process was not started with", Code.NOT_FOUND),
    UnknownModelVersionError: ErrorSpec(404, "unknown_model_version", "a model version other than \"1\"", Code.NOT_FOUND),
    VariantNotReadyError: ErrorSpec(503, "variant_unavailable", "variant not loaded (see Retry-After)", Code.UNAVAILABLE, log="line"),
    NoVariantLoadedError: ErrorSpec(503, "no_variant_loaded", "no variant is loaded (see Retry-After)", Code.UNAVAILABLE, log="line"),
    AttentionQueryError: ErrorSpec(
        422, "invalid_attention_query", "a stage, block, head or point the variant's attention cannot answer", Code.INVALID_ARGUMENT
    ),
    EmptyUploadError: ErrorSpec(400, "empty_body", "empty body", Code.INVALID_ARGUMENT),
    UnsupportedMediaTypeError: ErrorSpec(415, "unsupported_media_type", "unsupported Content-Type", Code.INVALID_ARGUMENT),
    UnsupportedContentEncodingError: ErrorSpec(
        415, "unsupported_content_encoding", "a body Content-Encoding other than gzip or deflate (see Accept-Encoding)", Code.INVALID_ARGUMENT
    ),
    ContentDecodingError: ErrorSpec(400, "invalid_content_encoding", "a body that does not inflate as its Content-Encoding says", Code.INVALID_ARGUMENT),
    UnsupportedFormatError: ErrorSpec(415, "unsupported_image_format", "unsupported image format", Code.INVALID_ARGUMENT),
    # an oversize gRPC message is grpc's own RESOURCE_EXHAUSTED
    BodyTooLargeError: ErrorSpec(413, "body_too_large", "body too large", Code.INVALID_ARGUMENT),
    RequestBodyTimeoutError: ErrorSpec(
        408, "request_timeout", "the body did not arrive within the deadline, or too slowly", Code.DEADLINE_EXCEEDED,
        log="line", close_connection=True,
    ),  # fmt: skip
    TooManyPixelsError: ErrorSpec(413, "too_many_pixels", "the request's images have too many pixels", Code.INVALID_ARGUMENT),
    TooManyImagesError: ErrorSpec(413, "too_many_images", "more images in one request than the queue holds", Code.INVALID_ARGUMENT),
    NotAnImageError: ErrorSpec(422, "invalid_image", "invalid image", Code.INVALID_ARGUMENT),
    ImageDecodeError: ErrorSpec(422, "invalid_image", "invalid image", Code.INVALID_ARGUMENT),
    ImageUnprocessableError: ErrorSpec(422, "unprocessable_image", "an image the model cannot take", Code.INVALID_ARGUMENT),
    InvalidParameterError: ErrorSpec(422, "invalid_parameter", "invalid parameter", Code.INVALID_ARGUMENT),
    RequestValidationError: ErrorSpec(422, "invalid_parameter", "invalid parameter", Code.INVALID_ARGUMENT),
    InferenceRequestError: ErrorSpec(400, "invalid_inference_request", "an inference request the model cannot run", Code.INVALID_ARGUMENT),
    TensorDataError: ErrorSpec(400, "invalid_inference_request", "an inference request the model cannot run", Code.INVALID_ARGUMENT),
    ExtensionRequestError: ErrorSpec(
        400, "invalid_extension_request", "statistics of auto, or load parameters the service does not take", Code.INVALID_ARGUMENT
    ),
    OverloadedError: ErrorSpec(
        429, "overloaded", "queue full, or the work ahead would keep it past its deadline (see Retry-After)", Code.RESOURCE_EXHAUSTED,
        log="line",
    ),  # fmt: skip
    DeadlineExceededError: ErrorSpec(504, "deadline_exceeded", "deadline passed before the model answered", Code.DEADLINE_EXCEEDED, log="line"),
    BatcherClosedError: ErrorSpec(503, "shutting_down", "the service is shutting down", Code.UNAVAILABLE, log="line"),
    ServiceNotStartedError: ErrorSpec(503, "not_started", "the service has not started", Code.UNAVAILABLE, log="line"),
    ServerNotReadyError: ErrorSpec(503, "not_ready", "not every requested variant is loaded (see Retry-After)", Code.UNAVAILABLE, log="line"),
    ModelExecutionError: ErrorSpec(500, "model_error", "model error (quote the request id)", Code.INTERNAL, log="traceback"),
    NotAuthorizedError: ErrorSpec(401, "unauthorized", "no or a wrong admin token (Authorization: Bearer ...)", Code.UNAUTHENTICATED),
    ModelControlDisabledError: ErrorSpec(403, "model_control_disabled", "no admin token is configured", Code.PERMISSION_DENIED),
    ControlBusyError: ErrorSpec(409, "control_busy", "another load or unload is running (see Retry-After)", Code.ABORTED),
    WeightsRefusedError: ErrorSpec(422, "weights_refused", "weights that fail verification (the old model keeps serving)", Code.INVALID_ARGUMENT),
    ClientDisconnect: ErrorSpec(CLIENT_CLOSED, "client_disconnected", "the client went away (never sent)", Code.CANCELLED),
}

# What a route that takes an uploaded image can answer, besides its own errors.
UPLOAD_ERRORS: tuple[type[Exception], ...] = (
    EmptyUploadError, UnsupportedMediaTypeError, UnsupportedFormatError, BodyTooLargeError, RequestBodyTimeoutError,
    TooManyPixelsError, NotAnImageError, ImageUnprocessableError, UnsupportedContentEncodingError, ContentDecodingError,
)  # fmt: skip
# What a route that runs a variant's model can answer.
MODEL_ERRORS: tuple[type[Exception], ...] = (
    UnknownVariantError, VariantNotServedError, VariantNotReadyError, OverloadedError, DeadlineExceededError, BatcherClosedError,
    ModelExecutionError,
)  # fmt: skip


def error_responses(*exc_types: type[Exception], body: type[BaseModel] = ErrorResponse) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` of a route that can raise ``exc_types`` (descriptions of one
    status joined), every one with the ``body`` model. 422 is always listed."""
    descriptions: dict[int, list[str]] = {}
    for exc_type in (*exc_types, RequestValidationError):
        spec = ERROR_TABLE[exc_type]
        if spec.status != CLIENT_CLOSED and spec.description not in descriptions.setdefault(spec.status, []):
            descriptions[spec.status].append(spec.description)
    return {
        status: {"model": body, "description": "; ".join(texts), **_headers_of(status)}
        for status, texts in sorted(descriptions.items())
    }


def _headers_of(status: int) -> dict[str, Any]:
    """The response headers an error of ``status`` may carry, for the OpenAPI document."""
    if status in (409, 429, 503):
        return {"headers": {RETRY_AFTER_HEADER: {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}}}
    if status == 408:
        return {"headers": {"Connection": {"description": "close: the connection is closed", "schema": {"type": "string"}}}}
    if status == 401:
        return {"headers": {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}}}
    return {}


def spec_for(exc: BaseException) -> ErrorSpec | None:
    for exc_type, spec in ERROR_TABLE.items():
        if isinstance(exc, exc_type):
            return spec
    return None


@dataclass(frozen=True)
class ErrorAnswer:
    """How an exception answers a request, whatever the protocol."""

    status: int  # HTTP status
    code: str  # machine-readable error code
    message: str
    grpc_code: grpc.StatusCode
    retry_after_s: int | None = None
    close_connection: bool = False


def answer_for(exc: BaseException, request_id: str | None) -> ErrorAnswer:
    """The answer to a request that failed with ``exc``, logged as its table entry says: failures
    of the service (and exceptions outside the table) with the request id and the traceback,
    expected conditions in one line."""
    spec = spec_for(exc)
    if spec is None:
        logger.error("request %s: unhandled %s", request_id, type(exc).__name__, exc_info=exc)
        return ErrorAnswer(500, "internal_error", f"internal error; quote request id {request_id} when reporting it", Code.INTERNAL)
    if spec.log == "traceback":
        logger.error("request %s: %s", request_id, exc, exc_info=exc.__cause__ or exc)
    elif spec.log == "line":
        logger.warning("request %s: %d %s: %s", request_id, spec.status, spec.code, exc)
    retry_after = getattr(exc, "retry_after_s", None)
    return ErrorAnswer(
        spec.status, spec.code, str(exc), spec.grpc_code, int(retry_after) if retry_after is not None else None, spec.close_connection
    )


def error_response(
    request: Request, status: int, code: str, detail: Any, *, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    """An error answer to ``request`` in its front door's body (the HTTP API's outside any door)."""
    context = context_of(request.scope)
    request_id = None
    render = detail_body
    if context is not None:
        context.record.error = code  # for the access log line
        request_id = context.record.request_id
        render = context.door.error_body
    all_headers = dict(headers or {})
    if request_id:
        all_headers[REQUEST_ID_HEADER] = request_id
    return JSONResponse(render(code, detail, request_id, **extra), status_code=status, headers=all_headers)


def _request_id(request: Request) -> str | None:
    context = context_of(request.scope)
    return context.record.request_id if context is not None else None


async def domain_error_handler(request: Request, exc: Exception) -> JSONResponse:
    answer = answer_for(exc, _request_id(request))
    headers = {RETRY_AFTER_HEADER: str(answer.retry_after_s)} if answer.retry_after_s is not None else {}
    if answer.close_connection:
        headers["Connection"] = "close"
    headers.update(getattr(exc, "headers", {}))  # e.g. WWW-Authenticate of a 401
    extra: dict[str, Any] = {}
    if isinstance(exc, UnknownVariantError):
        extra["valid"] = exc.valid
    return error_response(request, answer.status, answer.code, answer.message, headers=headers, **extra)


async def http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, StarletteHTTPException):  # registered for this type only
        raise exc
    return error_response(request, exc.status_code, _code_of_status(exc.status_code), exc.detail, headers=dict(exc.headers or {}))


async def validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, RequestValidationError):  # registered for this type only
        raise exc
    errors = [
        {"loc": [str(part) for part in error.get("loc", ())], "msg": error.get("msg", ""), "input": _jsonable(error.get("input"))}
        for error in exc.errors()
    ]
    detail = "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors)
    return error_response(request, 422, "invalid_parameter", detail, errors=errors)


async def unhandled_error_handler(request: Request, exc: Exception) -> JSONResponse:
    answer = answer_for(exc, _request_id(request))  # a 500 (an exception outside the table)
    return error_response(request, answer.status, answer.code, answer.message)


def install_error_handlers(app: FastAPI) -> None:
    for exc_type in ERROR_TABLE:
        if exc_type is not RequestValidationError:
            app.add_exception_handler(exc_type, domain_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(Exception, unhandled_error_handler)


def _code_of_status(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return f"http_{status}"


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)[:200]
