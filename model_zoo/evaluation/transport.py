"""What every endpoint protocol of ``attnzoo eval --endpoint`` shares: the answer types, the retrying
HTTP call, and :class:`Transport`, the base class of one protocol's client.

A protocol is a subclass with two methods, ``describe`` (what the endpoint serves as a variant)
and ``detect`` (one image's detections), in a module of its own beside this one
(:mod:`.attnzoo_http`, :mod:`.oip_v2`), named in :data:`model_zoo.evaluation.endpoint.PROTOCOLS`.
Each asks for the detections the variant's test config keeps (``score_thr`` of the registry
entry's architecture, the threshold mmdet evaluated at): :meth:`Transport.score_thr`.

Requests answered 429 or 503 are retried after the ``Retry-After`` the server sent (seconds or an
HTTP date, at most :data:`MAX_RETRY_AFTER_S`; without one, after an exponential back-off), and so
are connection errors, up to :data:`MAX_ATTEMPTS` attempts per request.
"""

from __future__ import annotations

import email.utils
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

import httpx

from model_zoo.errors import AttnzooError
from model_zoo.registry import Registry, load_registry

MAX_ATTEMPTS = 8
MAX_RETRY_AFTER_S = 60.0
BACKOFF_S = 0.5  # first wait without a Retry-After; doubled per attempt
DEFAULT_TIMEOUT_S = 120.0
RETRY_STATUSES = (429, 503)


class EndpointError(AttnzooError):
    """The endpoint cannot be used: unreachable, an error answer, or a malformed one."""


@dataclass(frozen=True)
class EndpointModel:
    """What the endpoint says about the variant it serves (None: the protocol does not say)."""

    variant: str
    sha256: str | None  # of the weights it loaded
    device: str | None
    weights_source: str | None  # official | synthetic | custom (model_zoo.demo_weights.weights_source)


@dataclass(frozen=True)
class ServedDetection:
    """One detection as the endpoint returned it: ``bbox`` (x1, y1, x2, y2) in original-image pixels."""

    bbox: tuple[float, float, float, float]
    score: float
    category_id: int


@dataclass(frozen=True)
class ServedResult:
    detections: list[ServedDetection]
    model_s: float | None  # the server's own model time, seconds (None: not reported)


class Transport(ABC):
    """One protocol's client for the endpoint at ``url``; safe to call from several threads.

    Args:
        registry: where a variant's test config comes from (default: :func:`load_registry`).
        timeout: seconds allowed for one request, the model's time included.
    """

    def __init__(self, url: str, *, registry: Registry | None = None, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self.url = url.rstrip("/")
        self._registry = registry if registry is not None else load_registry()
        self._client = httpx.Client(timeout=timeout)

    @abstractmethod
    def describe(self, variant: str) -> EndpointModel:
        """What the endpoint serves as ``variant``; :class:`EndpointError` if it serves none."""

    @abstractmethod
    def detect(self, image: bytes, variant: str) -> ServedResult:
        """``variant``'s detections of the encoded ``image`` above :meth:`score_thr`."""

    def score_thr(self, variant: str) -> float:
        """The test config's score threshold of ``variant`` (its architecture's ``roi.score_thr``)."""
        return self._registry.resolve(variant).arch.roi.score_thr

    def send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """:func:`send` to ``url + path``."""
        return send(self._client, method, self.url + path, **kwargs)

    def close(self) -> None:
        self._client.close()


def send(client: httpx.Client, method: str, url: str, *, sleep: Callable[[float], None] = time.sleep, **kwargs: Any) -> httpx.Response:
    """One request with the retries of the module docstring; a 2xx response or :class:`EndpointError`."""
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            response = client.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            if attempt == MAX_ATTEMPTS:
                raise EndpointError(f"{method} {url}: {str(exc) or type(exc).__name__} ({attempt} attempts)") from None
            sleep(BACKOFF_S * 2 ** (attempt - 1))
            continue
        if response.status_code in RETRY_STATUSES and attempt < MAX_ATTEMPTS:
            sleep(retry_after_s(response.headers.get("Retry-After"), attempt))
            continue
        if response.is_success:
            return response
        hint = " (fewer requests in flight: lower --concurrency)" if response.status_code == 504 else ""
        raise EndpointError(f"{method} {url}: HTTP {response.status_code}: {_reason(response)}{hint}")
    raise AssertionError("unreachable")  # pragma: no cover


def retry_after_s(header: str | None, attempt: int) -> float:
    """Seconds to wait: ``Retry-After`` (delta-seconds or HTTP date), else exponential back-off."""
    if header:
        try:
            return min(max(float(header), 0.0), MAX_RETRY_AFTER_S)
        except ValueError:
            pass
        try:
            when = email.utils.parsedate_to_datetime(header)
            return min(max((when - datetime.now(timezone.utc)).total_seconds(), 0.0), MAX_RETRY_AFTER_S)
        except (TypeError, ValueError):
            pass
    return min(BACKOFF_S * 2 ** (attempt - 1), MAX_RETRY_AFTER_S)


def json_object(response: httpx.Response) -> dict[str, Any]:
    """The response's JSON object; :class:`EndpointError` if the body is anything else."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise EndpointError(f"{response.request.method} {response.request.url}: the answer is not a JSON object")
    return body


def optional_str(value: Any) -> str | None:
    """A string field of an answer, or None when it is absent or not a string."""
    return value if isinstance(value, str) else None


def _reason(response: httpx.Response) -> str:
    """The service's one-line reason: its JSON ``detail``/``error``, else the start of the body."""
    try:
        body = response.json()
    except ValueError:
        return " ".join(response.text.split())[:200] or response.reason_phrase
    if isinstance(body, dict):
        for key in ("detail", "error"):
            if isinstance(body.get(key), str):
                return str(body[key])
    return " ".join(str(body).split())[:200]
