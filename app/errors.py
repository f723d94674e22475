"""Errors → HTTP: one table from exception type to status, error code and description, the
handlers that apply it, and the OpenAPI ``responses`` of each route, generated from the same table.

Every error response has the body ``{"error": <code>, "detail": <what was wrong>, "request_id": ...}``
(plus ``valid`` for an unknown variant, ``errors`` for invalid parameters) and the
``X-Request-ID`` header; under ``/v2`` (the Open Inference Protocol, ``app/oip``) the body is the
protocol's own, ``{"error": <what was wrong>}``, with the same status codes. Unexpected
exceptions are 500s whose body carries the request id that the log line (with the traceback)
carries too. Expected conditions of a running service (overloaded, deadline passed, variant not
loaded, shutting down) log one line, without a traceback.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from model_zoo import AttentionQueryError, ImageDecodeError, UnknownVariantError

from .admin_auth import ModelControlDisabledError, NotAuthorizedError
from .batching import BatcherClosedError, DeadlineExceededError, OverloadedError
from .decode import EmptyUploadError, NotAnImageError, TooManyPixelsError, UnsupportedFormatError
from .model_pool import (
    RETRY_AFTER_LOADING_S,
    ControlBusyError,
    NoVariantLoadedError,
    VariantNotReadyError,
    VariantNotServedError,
    WeightsRefusedError,
)
from .oip.inference import InferenceRequestError, TooManyImagesError
from .oip.metadata import UnknownModelVersionError
from .oip.tensors import TensorDataError
from .schemas import ErrorResponse
from .upload import BodyTooLargeError, UnsupportedMediaTypeError
from .variant_core import ImageUnprocessableError, InvalidParameterError, ModelExecutionError

logger = logging.getLogger("attnzoo.errors")

REQUEST_ID_HEADER = "X-Request-ID"
CLIENT_CLOSED = 499  # nginx's status for "client closed the request"
V2_PATH_PREFIX = "/v2"  # the Open Inference Protocol's routes (app/oip/http.py)


class ServiceNotStartedError(RuntimeError):
    """A request reached the app outside its lifespan (no models)."""


class ServerNotReadyError(RuntimeError):
    """Some requested variant is still loading or unavailable (``/v2/health/ready``)."""

    retry_after_s = RETRY_AFTER_LOADING_S

    def __init__(self, reasons: dict[str, str]) -> None:
        super().__init__("not ready: " + "; ".join(f"{variant}: {reason}" for variant, reason in reasons.items()))


class RequestBodyTimeoutError(Exception):
    """The request body did not arrive within the request deadline."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__(f"the request body did not arrive within {timeout_s:g} s (ATTNZOO_REQUEST_TIMEOUT_S)")


@dataclass(frozen=True)
class ErrorSpec:
    status: int
    code: str
    description: str  # for the OpenAPI docs: when a route answers this
    log: Literal["none", "line", "traceback"] = "none"  # besides the access log line
    close_connection: bool = False  # answer with Connection: close


# Most specific first: the first entry the exception is an instance of wins.
ERROR_TABLE: dict[type[Exception], ErrorSpec] = {
    UnknownVariantError: ErrorSpec(404, "unknown_variant", "unknown variant (the body lists the valid ones)"),
    # 404, not 503: it never loads in this process, so there is nothing to retry (no Retry-After)
    VariantNotServedError: ErrorSpec(404, "variant_not_served", "a registry variant this process was not started with"),
    UnknownModelVersionError: ErrorSpec(404, "unknown_model_version", "a model version other than \"1\""),
    VariantNotReadyError: ErrorSpec(503, "variant_unavailable", "variant not loaded (see Retry-After)", log="line"),
    NoVariantLoadedError: ErrorSpec(503, "no_variant_loaded", "no variant is loaded (see Retry-After)", log="line"),
    AttentionQueryError: ErrorSpec(
        422, "invalid_attention_query", "a stage, block, head or point the variant's attention cannot answer"
    ),
    EmptyUploadError: ErrorSpec(400, "empty_body", "empty body"),
    UnsupportedMediaTypeError: ErrorSpec(415, "unsupported_media_type", "unsupported Content-Type"),
    UnsupportedFormatError: ErrorSpec(415, "unsupported_image_format", "unsupported image format"),
    BodyTooLargeError: ErrorSpec(413, "body_too_large", "body too large"),
    RequestBodyTimeoutError: ErrorSpec(
        408, "request_timeout", "the body did not arrive within the deadline", log="line", close_connection=True
    ),
    TooManyPixelsError: ErrorSpec(413, "too_many_pixels", "image has too many pixels"),
    TooManyImagesError: ErrorSpec(413, "too_many_images", "more images in one request than the queue holds"),
    NotAnImageError: ErrorSpec(422, "invalid_image", "invalid image"),
    ImageDecodeError: ErrorSpec(422, "invalid_image", "invalid image"),
    ImageUnprocessableError: ErrorSpec(422, "unprocessable_image", "an image the model cannot take"),
    InvalidParameterError: ErrorSpec(422, "invalid_parameter", "invalid parameter"),
    RequestValidationError: ErrorSpec(422, "invalid_parameter", "invalid parameter"),
    InferenceRequestError: ErrorSpec(400, "invalid_inference_request", "an inference request the model cannot run"),
    TensorDataError: ErrorSpec(400, "invalid_inference_request", "an inference request the model cannot run"),
    OverloadedError: ErrorSpec(
        429, "overloaded", "queue full, or the queue ahead would keep it past its deadline (see Retry-After)", log="line"
    ),
    DeadlineExceededError: ErrorSpec(504, "deadline_exceeded", "deadline passed before the model answered", log="line"),
    BatcherClosedError: ErrorSpec(503, "shutting_down", "the service is shutting down", log="line"),
    ServiceNotStartedError: ErrorSpec(503, "not_started", "the service has not started", log="line"),
    ServerNotReadyError: ErrorSpec(503, "not_ready", "not every requested variant is loaded (see Retry-After)", log="line"),
    ModelExecutionError: ErrorSpec(500, "model_error", "model error (quote the request id)", log="traceback"),
    NotAuthorizedError: ErrorSpec(401, "unauthorized", "no or a wrong admin token (Authorization: Bearer ...)"),
    ModelControlDisabledError: ErrorSpec(403, "model_control_disabled", "no admin token is configured"),
    ControlBusyError: ErrorSpec(409, "control_busy", "another load or unload is running (see Retry-After)"),
    WeightsRefusedError: ErrorSpec(422, "weights_refused", "weights that fail verification (the old model keeps serving)"),
    ClientDisconnect: ErrorSpec(CLIENT_CLOSED, "client_disconnected", "the client went away (never sent)"),
}

# What a route that takes an uploaded image can answer, besides its own errors.
UPLOAD_ERRORS: tuple[type[Exception], ...] = (
    EmptyUploadError, UnsupportedMediaTypeError, UnsupportedFormatError, BodyTooLargeError, RequestBodyTimeoutError,
    TooManyPixelsError, NotAnImageError, ImageUnprocessableError,
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
        return {"headers": {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}}}
    if status == 408:
        return {"headers": {"Connection": {"description": "close: the connection is closed", "schema": {"type": "string"}}}}
    if status == 401:
        return {"headers": {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}}}
    return {}


def speaks_v2(path: str) -> bool:
    """Whether ``path`` is one of the Open Inference Protocol's (its error body is ``{"error": ...}``)."""
    return path == V2_PATH_PREFIX or path.startswith(V2_PATH_PREFIX + "/")


def request_id_of(request: Request) -> str | None:
    record = request.scope.get("state", {}).get("record")
    return record.request_id if record is not None else None


def error_body(code: str, detail: Any, request_id: str | None, **extra: Any) -> dict[str, Any]:
    """The JSON body of every error answer outside ``/v2`` (``schemas.ErrorResponse``)."""
    return {"error": code, "detail": detail, "request_id": request_id, **extra}


def error_payload(path: str, code: str, detail: Any, request_id: str | None, **extra: Any) -> dict[str, Any]:
    """The JSON body of an error answer to a request for ``path``: the Open Inference Protocol's
    ``{"error": ...}`` under ``/v2``, else :func:`error_body`."""
    if speaks_v2(path):
        return {"error": detail if isinstance(detail, str) else str(detail)}
    return error_body(code, detail, request_id, **extra)


def error_response(
    request: Request, status: int, code: str, detail: Any, *, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    record = request.scope.get("state", {}).get("record")
    request_id = None
    if record is not None:
        record.error = code  # for the access log line
        request_id = record.request_id
    body = error_payload(request.scope.get("path", ""), code, detail, request_id, **extra)
    all_headers = dict(headers or {})
    if request_id:
        all_headers[REQUEST_ID_HEADER] = request_id
    return JSONResponse(body, status_code=status, headers=all_headers)


def spec_for(exc: BaseException) -> ErrorSpec | None:
    for exc_type, spec in ERROR_TABLE.items():
        if isinstance(exc, exc_type):
            return spec
    return None


@dataclass(frozen=True)
class ErrorAnswer:
    """How an exception answers a request, whatever the protocol."""

    status: int  # HTTP status (gRPC maps it to a status code)
    code: str  # machine-readable error code
    message: str
    retry_after_s: int | None = None
    close_connection: bool = False


def answer_for(exc: Exception, request_id: str | None) -> ErrorAnswer:
    """The answer to a request that failed with ``exc``, logged as its table entry says: failures
    of the service (and exceptions outside the table) with the request id and the traceback,
    expected conditions in one line."""
    spec = spec_for(exc)
    if spec is None:
        logger.error("request %s: unhandled %s", request_id, type(exc).__name__, exc_info=exc)
        return ErrorAnswer(500, "internal_error", f"internal error; quote request id {request_id} when reporting it")
    if spec.log == "traceback":
        logger.error("request %s: %s", request_id, exc, exc_info=exc.__cause__ or exc)
    elif spec.log == "line":
        logger.warning("request %s: %d %s: %s", request_id, spec.status, spec.code, exc)
    retry_after = getattr(exc, "retry_after_s", None)
    return ErrorAnswer(
        spec.status, spec.code, str(exc), int(retry_after) if retry_after is not None else None, spec.close_connection
    )


async def domain_error_handler(request: Request, exc: Exception) -> JSONResponse:
    answer = answer_for(exc, request_id_of(request))
    headers = {"Retry-After": str(answer.retry_after_s)} if answer.retry_after_s is not None else {}
    if answer.close_connection:
        headers["Connection"] = "close"
    headers.update(getattr(exc, "headers", {}))  # e.g. WWW-Authenticate of a 401
    extra: dict[str, Any] = {}
    if isinstance(exc, UnknownVariantError):
        extra["valid"] = exc.valid
    return error_response(request, answer.status, answer.code, answer.message, headers=headers, **extra)


async def http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)  # registered for this type only
    code = _code_of_status(exc.status_code)
    return error_response(request, exc.status_code, code, exc.detail, headers=dict(exc.headers or {}))


async def validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)  # registered for this type only
    errors = [
        {"loc": [str(part) for part in error.get("loc", ())], "msg": error.get("msg", ""), "input": _jsonable(error.get("input"))}
        for error in exc.errors()
    ]
    detail = "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors)
    return error_response(request, 422, "invalid_parameter", detail, errors=errors)


async def unhandled_error_handler(request: Request, exc: Exception) -> JSONResponse:
    answer = answer_for(exc, request_id_of(request))  # a 500 (an exception outside the table)
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
