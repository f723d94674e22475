"""Where every request ends, whatever its front door: the request metrics and one JSON log line.

The line goes to the ``attnzoo.access`` logger (bare JSON on stderr, :func:`configure_access_log`).
Query parameters that carry secrets (a token sent in a URL) are written as ``[redacted]``.
"""

from __future__ import annotations

import json
import logging
import sys
import urllib.parse
from datetime import datetime, timezone

from ..core.metrics import ServiceMetrics
from ..core.record import RequestRecord

ACCESS_LOGGER = "attnzoo.access"
REDACTED = "[redacted]"
# query parameter names (lower-case) whose values are never logged
SENSITIVE_PARAMETERS = frozenset(
    {"token", "access_token", "id_token", "refresh_token", "api_key", "apikey", "key", "password", "secret", "auth", "authorization", "signature", "sig"}
)


def redacted_query(query: str) -> str:
    """``query`` (a raw query string) with the values of :data:`SENSITIVE_PARAMETERS` replaced."""
    if not query or "=" not in query:
        return query
    parts = []
    for part in query.split("&"):
        name, sep, _ = part.partition("=")
        if sep and urllib.parse.unquote_plus(name).strip().lower() in SENSITIVE_PARAMETERS:
            part = f"{name}={REDACTED}"
        parts.append(part)
    return "&".join(parts)


class AccessLog:
    """Counts finished requests (``attnzoo_requests_total`` and their duration) and logs each once."""

    def __init__(self, metrics: ServiceMetrics) -> None:
        self.metrics = metrics
        self.logger = logging.getLogger(ACCESS_LOGGER)

    def finish(
        self,
        record: RequestRecord,
        *,
        protocol: str,
        endpoint: str,
        method: str | None,
        path: str | None,
        query: str,
        status: int,
        seconds: float,
        client: str | None,
        **fields: object,
    ) -> None:
        """Count the request and log it; ``fields`` are added to the line (e.g. ``grpc_status``)."""
        self.metrics.observe_request(record.variant, endpoint, status, protocol, seconds)
        line = {
            "ts": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "request_id": record.request_id,
            "protocol": protocol,
            "method": method,
            "path": path,
            "query": redacted_query(query),
            "status": status,
            "duration_ms": round(seconds * 1000.0, 3),
            "variant": record.variant or None,
            "client": client,
            **fields,
        }
        if record.batch_size is not None:
            line["batch_size"] = record.batch_size
        if record.error is not None:
            line["error"] = record.error
        if record.budget_met is not None:
            line["budget_met"] = record.budget_met
        self.logger.info(json.dumps(line, separators=(",", ":")))


HANDLER_NAME = "attnzoo-access"


def configure_access_log() -> logging.Logger:
    """The access logger, writing bare JSON lines to stderr (idempotent)."""
    logger = logging.getLogger(ACCESS_LOGGER)
    if not any(handler.get_name() == HANDLER_NAME for handler in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.set_name(HANDLER_NAME)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger
