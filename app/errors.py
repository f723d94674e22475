"""Errors → HTTP: one table from exception type to status and error code, and the handlers.

Every error response has the body ``{"error": <code>, "detail": <what was wrong>, "request_id": ...}``
(plus ``valid`` for an unknown variant, ``errors`` for invalid parameters) and the
``X-Request-ID`` header. Unexpected exceptions are 500s whose body carries the request id that
the log line (with the traceback) carries too. Expected conditions of a running service
(overloaded, deadline passed, variant not loaded, shutting down) log one line, without a traceback.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from model_zoo import AttentionQueryError, ImageDecodeError, UnknownVariantError

from .batching import BatcherClosedError, DeadlineExceededError, OverloadedError
from .decode import EmptyUploadError, NotAnImageError, TooManyPixelsError, UnsupportedFormatError
from .deps import ServiceNotStartedError
from .model_pool import NoVariantLoadedError, VariantNotReadyError
from .pipeline import ImageUnprocessableError, InvalidParameterError, ModelExecutionError
from .upload import UnsupportedMediaTypeError

logger = logging.getLogger("attnzoo.errors")

REQUEST_ID_HEADER = "X-Request-ID"


class BodyTooLargeError(Exception):
    """The request body is (or announces itself) longer than the limit."""

    def __init__(self, max_bytes: int, announced: int | None = None) -> None:
        size = f"announces {announced} bytes" if announced is not None else "is longer"
        super().__init__(f"the request body {size}; the limit is {max_bytes} bytes (ATTNZOO_MAX_BODY_BYTES)")


class RequestBodyTimeoutError(Exception):
    """The request body did not arrive within the request deadline."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__(f"the request body did not arrive within {timeout_s:g} s (ATTNZOO_REQUEST_TIMEOUT_S)")


@dataclass(frozen=True)
class ErrorSpec:
    status: int
    code: str
    log: Literal["none", "line", "traceback"] = "none"  # besides the access log line
    close_connection: bool = False  # answer with Connection: close


# Most specific first: the first entry the exception is an instance of wins.
ERROR_TABLE: tuple[tuple[type[Exception], ErrorSpec], ...] = (
    (UnknownVariantError, ErrorSpec(404, "unknown_variant")),
    (VariantNotReadyError, ErrorSpec(503, "variant_unavailable", log="line")),
    (NoVariantLoadedError, ErrorSpec(503, "no_variant_loaded", log="line")),
    (AttentionQueryError, ErrorSpec(422, "invalid_attention_query")),
    (EmptyUploadError, ErrorSpec(400, "empty_body")),
    (UnsupportedMediaTypeError, ErrorSpec(415, "unsupported_media_type")),
    (UnsupportedFormatError, ErrorSpec(415, "unsupported_image_format")),
    (BodyTooLargeError, ErrorSpec(413, "body_too_large")),
    (RequestBodyTimeoutError, ErrorSpec(408, "request_timeout", log="line", close_connection=True)),
    (TooManyPixelsError, ErrorSpec(413, "too_many_pixels")),
    (NotAnImageError, ErrorSpec(422, "invalid_image")),
    (ImageDecodeError, ErrorSpec(422, "invalid_image")),
    (ImageUnprocessableError, ErrorSpec(422, "unprocessable_image")),
    (InvalidParameterError, ErrorSpec(422, "invalid_parameter")),
    (OverloadedError, ErrorSpec(429, "overloaded", log="line")),  # queue full, or its deadline unreachable
    (DeadlineExceededError, ErrorSpec(504, "deadline_exceeded", log="line")),
    (BatcherClosedError, ErrorSpec(503, "shutting_down", log="line")),
    (ServiceNotStartedError, ErrorSpec(503, "not_started", log="line")),
    (ModelExecutionError, ErrorSpec(500, "model_error", log="traceback")),
    (ClientDisconnect, ErrorSpec(499, "client_disconnected")),  # nobody reads it; for log and metrics
)


def request_id_of(request: Request) -> str | None:
    return request.scope.get("state", {}).get("request_id")


def error_body(code: str, detail: Any, request_id: str | None, **extra: Any) -> dict[str, Any]:
    """The JSON body of every error answer (``schemas.ErrorResponse``)."""
    return {"error": code, "detail": detail, "request_id": request_id, **extra}


def error_response(
    request: Request, status: int, code: str, detail: Any, *, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    request_id = request_id_of(request)
    request.scope.setdefault("state", {})["error"] = code  # for the access log line
    body = error_body(code, detail, request_id, **extra)
    all_headers = dict(headers or {})
    if request_id:
        all_headers[REQUEST_ID_HEADER] = request_id
    return JSONResponse(body, status_code=status, headers=all_headers)


def spec_for(exc: BaseException) -> ErrorSpec | None:
    for exc_type, spec in ERROR_TABLE:
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
    if spec.close_connection:
        headers["Connection"] = "close"
    extra: dict[str, Any] = {}
    if isinstance(exc, UnknownVariantError):
        extra["valid"] = exc.valid
    if spec.log == "traceback":
        logger.error("request %s: %s", request_id_of(request), exc, exc_info=exc.__cause__ or exc)
    elif spec.log == "line":
        logger.warning("request %s: %d %s: %s", request_id_of(request), spec.status, spec.code, exc)
    return error_response(request, spec.status, spec.code, str(exc), headers=headers, **extra)


async def http_error_handler(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = _code_of_status(exc.status_code)
    return error_response(request, exc.status_code, code, exc.detail, headers=dict(exc.headers or {}))


async def validation_error_handler(request: Request, exc: RequestValidationError) -> JSONResponse:
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
    for exc_type, _spec in ERROR_TABLE:
        app.add_exception_handler(exc_type, domain_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, validation_error_handler)  # type: ignore[arg-type]
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
