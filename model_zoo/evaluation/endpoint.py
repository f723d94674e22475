"""``attnzoo eval --endpoint URL``: the job's images sent to a live service instead of a local model.

A :class:`Transport` speaks one protocol; this module holds what every protocol shares (the
retrying HTTP call, the bounded-concurrency runner) and attnzoo's own protocol,
``POST /detect`` (raw image body, ``variant=``, ``score_thr=0.05``: the test config's
detections) and ``GET /models/{variant}`` (the weights' sha256). Another protocol is one module
with a class of the same two methods (see :mod:`model_zoo.evaluation.oip_v2`), named in
:data:`PROTOCOLS`.

Requests answered 429 or 503 are retried after the ``Retry-After`` the server sent (seconds or an
HTTP date, at most :data:`MAX_RETRY_AFTER_S`; without one, after an exponential back-off), and so
are connection errors, up to :data:`MAX_ATTEMPTS` attempts per request.
"""

from __future__ import annotations

import concurrent.futures
import email.utils
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence

import httpx

from model_zoo.errors import AttnzooError

from .coco_data import CocoImage
from .coco_metrics import to_coco_result
from .timing import WarmupCounter

TEST_SCORE_THR = 0.05  # the architectures' test-time score threshold: every detection mmdet reports
MAX_ATTEMPTS = 8
MAX_RETRY_AFTER_S = 60.0
BACKOFF_S = 0.5  # first wait without a Retry-After; doubled per attempt
DEFAULT_TIMEOUT_S = 120.0
RETRY_STATUSES = (429, 503)


class EndpointError(AttnzooError):
    """The endpoint cannot be used: unreachable, an error answer, or a malformed one."""


@dataclass(frozen=True)
class EndpointModel:
    """What the endpoint says about the variant it serves."""

    variant: str
    sha256: str | None  # of the weights it loaded (None: the protocol does not say)
    device: str | None


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


class Transport(Protocol):
    """One protocol's client for one endpoint; safe to call from several threads."""

    url: str

    def describe(self, variant: str) -> EndpointModel: ...

    def detect(self, image: bytes, variant: str) -> ServedResult: ...

    def close(self) -> None: ...


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


def _reason(response: httpx.Response) -> str:
    """The service's one-line reason: its JSON ``detail``/``error``, else the start of the body."""
    try:
        body = response.json()
    except ValueError:
        return " ".join(response.text.split())[:200] or response.reason_phrase
    if isinstance(body, dict):
        for key in ("detail", "error"):
            if isinstance(body.get(key), str):
                return body[key]
    return " ".join(str(body).split())[:200]


class AttnzooTransport:
    """attnzoo's own protocol (``app/routes/detect.py``, ``app/routes/models.py``)."""

    def __init__(self, url: str, *, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self.url = url.rstrip("/")
        self._client = httpx.Client(timeout=timeout)

    def describe(self, variant: str) -> EndpointModel:
        body = _json(send(self._client, "GET", f"{self.url}/models/{variant}"))
        if body.get("state") not in (None, "loaded"):
            raise EndpointError(f"{self.url}: variant {variant!r} is {body.get('state')}: {body.get('reason')}")
        return EndpointModel(variant=str(body.get("variant", variant)), sha256=body.get("sha256"), device=body.get("device"))

    def detect(self, image: bytes, variant: str) -> ServedResult:
        response = send(
            self._client,
            "POST",
            f"{self.url}/detect",
            params={"variant": variant, "score_thr": TEST_SCORE_THR},
            content=image,
            headers={"Content-Type": "application/octet-stream", "Accept": "application/json"},
        )
        body = _json(response)
        try:
            detections = [_served_detection(d["bbox"], d["score"], d["category_id"]) for d in body["detections"]]
            model_ms = (body.get("timings_ms") or {}).get("model")
        except (KeyError, TypeError, ValueError):
            raise EndpointError(f"{self.url}/detect: an answer without the detections schema") from None
        return ServedResult(detections, None if model_ms is None else float(model_ms) / 1000.0)

    def close(self) -> None:
        self._client.close()


def _served_detection(bbox: Sequence[Any], score: Any, category_id: Any) -> ServedDetection:
    x1, y1, x2, y2 = (float(v) for v in bbox)
    return ServedDetection((x1, y1, x2, y2), float(score), int(category_id))


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise EndpointError(f"{response.request.method} {response.request.url}: the answer is not a JSON object")
    return body


def _open_oip_v2(url: str) -> Transport:
    from .oip_v2 import OipV2Transport

    return OipV2Transport(url)


PROTOCOLS: dict[str, Callable[[str], Transport]] = {"attnzoo": AttnzooTransport, "v2": _open_oip_v2}


def open_transport(url: str, protocol: str = "attnzoo") -> Transport:
    if protocol not in PROTOCOLS:
        raise EndpointError(f"unknown endpoint protocol {protocol!r}; valid: {', '.join(PROTOCOLS)}")
    if not url.startswith(("http://", "https://")):
        raise EndpointError(f"endpoint {url!r}: expected an http:// or https:// URL")
    return PROTOCOLS[protocol](url)


class EndpointRunner:
    """Sends images to the endpoint, at most ``concurrency`` at a time; yields one detections-log
    record per image, in completion order (the job sorts them by image)."""

    def __init__(self, transport: Transport, variant: str, *, concurrency: int) -> None:
        self.transport = transport
        self.model = transport.describe(variant)
        self.variant = variant
        self.concurrency = concurrency
        self.header = {"variant": variant, "sha256": self.model.sha256, "endpoint": transport.url}
        self.device_label = f"{transport.url} ({self.model.device or 'device not reported'})"

    def records(self, images: Sequence[CocoImage]) -> Iterator[dict[str, Any]]:
        warmup = WarmupCounter()
        with concurrent.futures.ThreadPoolExecutor(self.concurrency, thread_name_prefix="endpoint") as pool:
            pending: set[concurrent.futures.Future[dict[str, Any]]] = set()
            queue = iter(images)
            try:
                while True:
                    for image in queue:
                        pending.add(pool.submit(self._one, image, warmup.next_is_warmup()))
                        if len(pending) >= self.concurrency:
                            break
                    if not pending:
                        return
                    done, pending = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
                    for future in done:
                        yield future.result()
            finally:
                for future in pending:
                    future.cancel()

    def _one(self, image: CocoImage, warmup: bool) -> dict[str, Any]:
        start = time.perf_counter()
        served = self.transport.detect(_read(image.path), self.variant)
        end_to_end_s = time.perf_counter() - start
        return {
            "image_id": image.image_id,
            "index": image.index,
            "detections": [to_coco_result(image.image_id, detection) for detection in served.detections],
            "model_s": served.model_s,
            "end_to_end_s": end_to_end_s,
            "warmup": warmup,
            "peak_memory_mb": None,
            "memory_kind": "not measured (endpoint)",
        }

    def close(self) -> None:
        self.transport.close()


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise EndpointError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from None
