"""``attnzoo eval --endpoint URL``: the job's images sent to a live service instead of a local model.

:class:`EndpointRunner` sends them, at most ``concurrency`` at a time, through one protocol's
:class:`~.transport.Transport`: :data:`PROTOCOLS` names them (attnzoo's own ``POST /detect`` in
:mod:`.attnzoo_http`, the Open Inference Protocol in :mod:`.oip_v2`). The run takes one process:
the requests in flight are its parallelism.
"""

from __future__ import annotations

import concurrent.futures
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

from model_zoo.registry import Registry

from .attnzoo_http import AttnzooTransport
from .coco_data import CocoImage
from .coco_metrics import to_coco_result
from .oip_v2 import OipV2Transport
from .speed import WarmupCounter
from .transport import EndpointError, Transport

PROTOCOLS: dict[str, type[Transport]] = {"attnzoo": AttnzooTransport, "v2": OipV2Transport}


def open_transport(url: str, protocol: str = "attnzoo", *, registry: Registry | None = None) -> Transport:
    """The client of ``protocol`` for the endpoint at ``url``; ``registry`` gives each variant's
    test config (default: :func:`~model_zoo.registry.load_registry`).

    Raises:
        EndpointError: an unknown protocol or a URL that is not http(s).
    """
    if protocol not in PROTOCOLS:
        raise EndpointError(f"unknown endpoint protocol {protocol!r}; valid: {', '.join(PROTOCOLS)}")
    if not url.startswith(("http://", "https://")):
        raise EndpointError(f"endpoint {url!r}: expected an http:// or https:// URL")
    return PROTOCOLS[protocol](url, registry=registry)


class EndpointRunner:
    """Sends images to the endpoint, at most ``concurrency`` at a time; yields one detections-log
    record per image, in completion order (the job sorts them by image)."""

    def __init__(self, transport: Transport, variant: str, *, concurrency: int) -> None:
        self.transport = transport
        self.model = transport.describe(variant)
        self.variant = variant
        self.concurrency = concurrency
        self.header: dict[str, Any] = {"variant": variant, "sha256": self.model.sha256, "endpoint": transport.url}
        self.device_label = f"{transport.url} ({self.model.device or 'device not reported'})"
        self.weights_source = self.model.weights_source

    @classmethod
    def open(cls, url: str, protocol: str, variant: str, *, registry: Registry, concurrency: int) -> EndpointRunner:
        """A runner of ``variant`` on a new transport, which it closes."""
        transport = open_transport(url, protocol, registry=registry)
        try:
            return cls(transport, variant, concurrency=concurrency)
        except BaseException:
            transport.close()
            raise

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
