"""Where every request ends, whatever its front door: the request metrics and one JSON log line.

The line goes to the ``attnzoo.access`` logger (bare JSON on stderr, :func:`configure_access_log`).
Query parameters that carry secrets (a token sent in a URL) are written as ``[redacted]``. A request
for something the service does not have (a path no route serves, an RPC it does not implement) is
counted like any other (endpoint ``unmatched``) and, the first time each is asked for, logged as a
warning too.
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
logger = logging.getLogger("attnzoo.requests")
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
        grpc_status: str | None = None,
        **fields: object,
    ) -> None:
        """Count the request and log it. ``status``: the HTTP status (a gRPC request's: that of the
        same error over HTTP); ``grpc_status``: a gRPC request's status code name, its metrics'
        ``status`` label and a field of the line; ``fields`` are added to the line."""
        self.metrics.observe_request(record.variant, endpoint, grpc_status or str(status), protocol, seconds)
        if grpc_status is not None:
            fields["grpc_status"] = grpc_status
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

    def unknown(self, protocol: str, what: str, request_id: str) -> None:
        """A request for ``what`` (``GET /v2/nothing``, an RPC's full name), which the service does
        not have: a warning the first time (the request itself is counted by :meth:`finish`)."""
        if self.metrics.first_unknown(f"{protocol} {what}"):
            logger.warning(
                "%s request for %s, which this service does not have (request %s); counted as endpoint 'unmatched', logged once",
                protocol, what, request_id,
            )  # fmt: skip


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
