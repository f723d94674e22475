"""Errors → HTTP: one table from exception type to status, error code and description, the
handlers that apply it, and the OpenAPI ``responses`` of each route, generated from the same table.

Every error response has the body ``{"error": <code>, "detail": <what was wrong>, "request_id": ...}``
(plus ``valid`` for an unknown variant, ``errors`` for invalid parameters) and the
``X-Request-ID`` header. Unexpected exceptions are 500s whose body carries the request id that
the log line (with the traceback) carries too.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from model_zoo import AttentionQueryError, ImageDecodeError, UnknownVariantError

from .admin_auth import ModelControlDisabledError, NotAuthorizedError
from .batching import BatcherClosedError, DeadlineExceededError, QueueFullError
from .decode import EmptyUploadError, NotAnImageError, TooManyPixelsError, UnsupportedFormatError
from .model_pool import (
    ControlBusyError,
    NoVariantLoadedError,
    VariantNotReadyError,
    VariantNotServedError,
    WeightsRefusedError,
)
from .schemas import ErrorResponse
from .upload import BodyTooLargeError, UnsupportedMediaTypeError
from .variant_core import ImageUnprocessableError, InvalidParameterError, ModelExecutionError

logger = logging.getLogger("attnzoo.errors")

REQUEST_ID_HEADER = "X-Request-ID"
CLIENT_CLOSED = 499  # nginx's status for "client closed the request"


class ServiceNotStartedError(RuntimeError):
    """A request reached the app outside its lifespan (no models)."""


@dataclass(frozen=True)
class ErrorSpec:
    status: int
    code: str
    description: str  # for the OpenAPI docs: when a route answers this


# Most specific first: the first entry the exception is an instance of wins.
ERROR_TABLE: dict[type[Exception], ErrorSpec] = {
    UnknownVariantError: ErrorSpec(404, "unknown_variant", "unknown variant (the body lists the valid ones)"),
    # 404, not 503: it never loads in this process, so there is nothing to retry (no Retry-After)
    VariantNotServedError: ErrorSpec(404, "variant_not_served", "a registry variant this process was not started with"),
    VariantNotReadyError: ErrorSpec(503, "variant_unavailable", "variant not loaded (see Retry-After)"),
    NoVariantLoadedError: ErrorSpec(503, "no_variant_loaded", "no variant is loaded (see Retry-After)"),
    AttentionQueryError: ErrorSpec(
        422, "invalid_attention_query", "a stage, block, head or point the variant's attention cannot answer"
    ),
    EmptyUploadError: ErrorSpec(400, "empty_body", "empty body"),
    UnsupportedMediaTypeError: ErrorSpec(415, "unsupported_media_type", "unsupported Content-Type"),
    UnsupportedFormatError: ErrorSpec(415, "unsupported_image_format", "unsupported image format"),
    BodyTooLargeError: ErrorSpec(413, "body_too_large", "body too large"),
    TooManyPixelsError: ErrorSpec(413, "too_many_pixels", "image has too many pixels"),
    NotAnImageError: ErrorSpec(422, "invalid_image", "invalid image"),
    ImageDecodeError: ErrorSpec(422, "invalid_image", "invalid image"),
    ImageUnprocessableError: ErrorSpec(422, "unprocessable_image", "an image the model cannot take"),
    InvalidParameterError: ErrorSpec(422, "invalid_parameter", "invalid parameter"),
    RequestValidationError: ErrorSpec(422, "invalid_parameter", "invalid parameter"),
    QueueFullError: ErrorSpec(429, "overloaded", "queue full (see Retry-After)"),
    DeadlineExceededError: ErrorSpec(504, "deadline_exceeded", "deadline passed before the model answered"),
    BatcherClosedError: ErrorSpec(503, "shutting_down", "the service is shutting down"),
    ServiceNotStartedError: ErrorSpec(503, "not_started", "the service has not started"),
    ModelExecutionError: ErrorSpec(500, "model_error", "model error (quote the request id)"),
    NotAuthorizedError: ErrorSpec(401, "unauthorized", "no or a wrong admin token (Authorization: Bearer ...)"),
    ModelControlDisabledError: ErrorSpec(403, "model_control_disabled", "no admin token is configured"),
    ControlBusyError: ErrorSpec(409, "control_busy", "another load or unload is running (see Retry-After)"),
    WeightsRefusedError: ErrorSpec(422, "weights_refused", "weights that fail verification (the old model keeps serving)"),
    ClientDisconnect: ErrorSpec(CLIENT_CLOSED, "client_disconnected", "the client went away (never sent)"),
}

# What a route that takes an uploaded image can answer, besides its own errors.
UPLOAD_ERRORS: tuple[type[Exception], ...] = (
    EmptyUploadError, UnsupportedMediaTypeError, UnsupportedFormatError, BodyTooLargeError, TooManyPixelsError,
    NotAnImageError, ImageUnprocessableError,
)  # fmt: skip
# What a route that runs a variant's model can answer.
MODEL_ERRORS: tuple[type[Exception], ...] = (
    UnknownVariantError, VariantNotServedError, VariantNotReadyError, QueueFullError, DeadlineExceededError, BatcherClosedError,
    ModelExecutionError,
)  # fmt: skip


def error_responses(*exc_types: type[Exception]) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` of a route that can raise ``exc_types`` (descriptions of one
    status joined), every one with the :class:`ErrorResponse` body. 422 is always listed."""
    descriptions: dict[int, list[str]] = {}
    for exc_type in (*exc_types, RequestValidationError):
        spec = ERROR_TABLE[exc_type]
        if spec.status != CLIENT_CLOSED and spec.description not in descriptions.setdefault(spec.status, []):
            descriptions[spec.status].append(spec.description)
    return {
        status: {"model": ErrorResponse, "description": "; ".join(texts)} for status, texts in sorted(descriptions.items())
    }


def request_id_of(request: Request) -> str | None:
    record = request.scope.get("state", {}).get("record")
    return record.request_id if record is not None else None


def error_response(
    request: Request, status: int, code: str, detail: Any, *, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    record = request.scope.get("state", {}).get("record")
    request_id = None
    if record is not None:
        record.error = code  # for the access log line
        request_id = record.request_id
    body = {"error": code, "detail": detail, "request_id": request_id, **extra}
    all_headers = dict(headers or {})
    if request_id:
        all_headers[REQUEST_ID_HEADER] = request_id
    return JSONResponse(body, status_code=status, headers=all_headers)


def spec_for(exc: BaseException) -> ErrorSpec | None:
    for exc_type, spec in ERROR_TABLE.items():
        if isinstance(exc, exc_type):
            return spec
    return None


async def domain_error_handler(request: Request, exc: Exception) -> JSONResponse:
    spec = spec_for(exc)
    if spec is None:  # pragma: no cover - only registered for table entries
        return await unhandled_error_handler(request, exc)
    headers = {}
    retry_after = getattr(exc, "retry_after_s", None)
    if retry_after is not None:
        headers["Retry-After"] = str(int(retry_after))
    headers.update(getattr(exc, "headers", {}))  # e.g. WWW-Authenticate of a 401
    extra: dict[str, Any] = {}
    if isinstance(exc, UnknownVariantError):
        extra["valid"] = exc.valid
    if spec.status >= 500:
        logger.error("request %s: %s", request_id_of(request), exc, exc_info=exc.__cause__ or exc)
    return error_response(request, spec.status, spec.code, str(exc), headers=headers, **extra)


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
    request_id = request_id_of(request)
    logger.error("request %s: unhandled %s", request_id, type(exc).__name__, exc_info=exc)
    return error_response(request, 500, "internal_error", f"internal error; quote request id {request_id} when reporting it")


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
