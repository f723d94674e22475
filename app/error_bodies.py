"""The error answers' bodies and header names: what every front door may import.

Each front door chooses its body: the HTTP API's :func:`detail_body` (``{"error": <code>,
"detail": <what was wrong>, "request_id": ...}``), the Open Inference Protocol's
:func:`message_body` (``{"error": <what was wrong>}``). Either way the request id is also the
``X-Request-ID`` header, and an error that should be retried carries ``Retry-After``.
"""

from __future__ import annotations

from typing import Any, Protocol

REQUEST_ID_HEADER = "X-Request-ID"
RETRY_AFTER_HEADER = "Retry-After"
CLIENT_CLOSED = 499  # nginx's status for "client closed the request"


class ErrorBody(Protocol):
    """Renders an error answer's JSON body: its code, what was wrong, the request id, and extra
    fields (``valid`` for an unknown variant, ``errors`` for invalid parameters)."""

    def __call__(self, code: str, detail: Any, request_id: str | None, **extra: Any) -> dict[str, Any]: ...


def detail_body(code: str, detail: Any, request_id: str | None, **extra: Any) -> dict[str, Any]:
    """The HTTP API's error body (``app.api.schemas.ErrorResponse``)."""
    return {"error": code, "detail": detail, "request_id": request_id, **extra}


def message_body(code: str, detail: Any, request_id: str | None, **extra: Any) -> dict[str, Any]:
    """The Open Inference Protocol's error body: what was wrong, in words."""
    return {"error": detail if isinstance(detail, str) else str(detail)}
