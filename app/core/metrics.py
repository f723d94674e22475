"""Prometheus metrics of the service (names are a contract with docker/ and Grafana).

Each app owns a :class:`ServiceMetrics` with its own ``CollectorRegistry``, so several apps (tests)
can live in one process; prometheus-client's own ASGI app serves it at ``/metrics``. The metric
objects are updated by the core around a request's stages, by the batcher's hook and by the access
log where each request ends, never from inside model code. Process metrics (``process_*``) come from
prometheus-client's collector; no ``*_created`` series are exported.

Beside the service's own families, :class:`TritonMetricsCollector` exports the served variants'
statistics (``statistics.py``) under Triton's names (``nv_inference_*``, labels ``model`` and
``version``), so that dashboards made for Triton read them. Those names are Triton's exactly: its
counters have no ``_total`` suffix, which prometheus-client's counter types always add, so they
are exposed untyped (``rate()`` and ``increase()`` take them alike); ``promtool check metrics``
flags the names themselves (no ``_total``; ``_us`` and ``_count`` suffixes), as it flags Triton's
own, and nothing else.
"""

from __future__ import annotations

import threading
from typing import Callable, Iterable, Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    disable_created_metrics,
    make_asgi_app,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import Receive, Scope, Send

from model_zoo import build_info

from .statistics import FAILURE_REASONS, Duration, StatisticsSnapshot

STAGES = ("queue", "preprocess", "model", "postprocess")
# The `protocol` label of the request metrics: /detect and the other routes, the Open Inference
# Protocol (app/oip) over HTTP, and over gRPC (whose `status` is the gRPC status code's name).
PROTOCOLS = ("http", "v2-http", "v2-grpc")
PROTOCOL_HTTP, PROTOCOL_V2_HTTP, PROTOCOL_V2_GRPC = PROTOCOLS
METRICS_PATH = "/metrics"
# The OpenAPI path item of METRICS_PATH: an ASGI endpoint, which FastAPI does not document itself.
METRICS_OPENAPI = {
    "get": {
        "tags": ["metrics"],
        "summary": "Prometheus metrics",
        "operationId": "metrics",
        "responses": {
            "200": {
                "description": "Prometheus text exposition (OpenMetrics when the Accept header asks for it)",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        },
    }
}

# seconds: from a GPU batch (a few ms) to a CPU forward at full scale (several seconds)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128, 256)
UNKNOWN_KINDS_KEPT = 1000  # distinct unknown paths and RPCs remembered (each logged once); later ones are not logged


class CudaMemoryCollector(Collector):
    """``attnzoo_gpu_memory_bytes``: CUDA memory allocated by tensors, sampled at each scrape."""

    def __init__(self) -> None:
        self.devices: Callable[[], Iterable[str]] = lambda: ()  # e.g. ["cuda:0"]; set once models load

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "attnzoo_gpu_memory_bytes", "CUDA memory allocated by tensors (CUDA devices only).", labels=["device"]
        )
        devices = list(self.devices())
        if devices:
            import torch  # only when a model lives on a GPU

            for device in devices:
                family.add_metric([device], torch.cuda.memory_allocated(device))
        yield family


ServedStatistics = Callable[[], Iterable[tuple[str, StatisticsSnapshot, int]]]
"""(variant, its statistics now, requests waiting for its model) of each served variant."""

# Triton's families of model statistics: name, help, and the statistic (microseconds for durations).
_TRITON_COUNTERS: tuple[tuple[str, str, Callable[[StatisticsSnapshot], float]], ...] = (
    ("nv_inference_request_success", "Number of successful inference requests, all batch sizes", lambda s: s.success.count),
    ("nv_inference_count", "Number of inferences performed (images)", lambda s: s.inference_count),
    ("nv_inference_exec_count", "Number of model executions performed (forwards)", lambda s: s.execution_count),
    ("nv_inference_request_duration_us", "Cumulative inference request duration in microseconds", lambda s: _us(s.success)),
    ("nv_inference_queue_duration_us", "Cumulative inference queuing duration in microseconds", lambda s: _us(s.queue)),
    (
        "nv_inference_compute_input_duration_us", "Cumulative compute input duration in microseconds (decoding and resizing)",
        lambda s: _us(s.compute_input),
    ),
    ("nv_inference_compute_infer_duration_us", "Cumulative compute inference duration in microseconds", lambda s: _us(s.compute_infer)),
    (
        "nv_inference_compute_output_duration_us", "Cumulative inference compute output duration in microseconds (filtering)",
        lambda s: _us(s.compute_output),
    ),
)  # fmt: skip
MODEL_VERSION_LABEL = "1"  # every variant has one version


def _us(duration: Duration) -> float:
    return duration.ns // 1000


class TritonMetricsCollector(Collector):
    """Triton's ``nv_inference_*`` families of the served variants, read from their statistics at
    each scrape (so they move exactly as the statistics answers do; a variant reloaded starts from
    zero, an unloaded one has no series)."""

    def __init__(self) -> None:
        self.served: ServedStatistics = lambda: ()  # set when the service starts

    def collect(self) -> Iterator[Metric]:
        served = list(self.served())
        for name, documentation, value in _TRITON_COUNTERS:
            family = Metric(name, documentation, "unknown")
            for variant, snapshot, _ in served:
                family.add_sample(name, {"model": variant, "version": MODEL_VERSION_LABEL}, value(snapshot))
            yield family
        failures = Metric("nv_inference_request_failure", "Number of failed inference requests, all batch sizes", "unknown")
        for variant, snapshot, _ in served:
            for reason in FAILURE_REASONS:
                labels = {"model": variant, "reason": reason, "version": MODEL_VERSION_LABEL}
                failures.add_sample("nv_inference_request_failure", labels, snapshot.failures[reason])
        yield failures
        pending = GaugeMetricFamily(
            "nv_inference_pending_request_count", "Instantaneous number of pending requests awaiting execution per-model.",
            labels=["model", "version"],
        )  # fmt: skip
        for variant, _, waiting in served:
            pending.add_metric([variant, MODEL_VERSION_LABEL], waiting)
        yield pending


class ServiceMetrics:
    """The metric families; label values: ``variant`` = short name ("" for a request no variant answered)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        disable_created_metrics()  # process-wide in prometheus-client; nothing here reads them
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        self.requests = Counter(
            "attnzoo_requests_total",
            "Requests by variant, endpoint, status and protocol (http, v2-http, v2-grpc; an HTTP request's "
            "status is its status code, a gRPC request's its status code's name: OK, INVALID_ARGUMENT, ...).",
            ["variant", "endpoint", "status", "protocol"], registry=r,
        )  # fmt: skip
        self.request_duration = Histogram(
            "attnzoo_request_duration_seconds", "End-to-end request latency (first byte in to response sent).",
            ["variant", "endpoint", "protocol"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.stage_duration = Histogram(
            "attnzoo_stage_duration_seconds",
            "Time an image spends per stage: queue (waiting for the model), preprocess "
            "(decode + resize), model (its batch's forward), postprocess (score, class and count filter).",
            ["variant", "stage"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.batch_size = Histogram(
            "attnzoo_batch_size", "Requests per model call.", ["variant"], buckets=BATCH_BUCKETS, registry=r
        )
        self.inflight = Gauge(
            "attnzoo_inflight_requests", "Requests in flight for a variant, from their admission to their end (every protocol).",
            ["variant"], registry=r,
        )
        self.queue_depth = Gauge("attnzoo_queue_depth", "Requests waiting for the model.", ["variant"], registry=r)
        self.model_load = Gauge(
            "attnzoo_model_load_seconds", "Time to load, verify and warm up the variant.", ["variant"], registry=r
        )
        self.gpu_memory = CudaMemoryCollector()
        r.register(self.gpu_memory)
        self.auto_choices = Counter(
            "attnzoo_auto_choices_total", "variant=auto: the variant chosen, and whether it fits the budget.",
            ["variant", "budget_met"], registry=r,
        )  # fmt: skip
        self.model_control = Counter(
            "attnzoo_model_control_total", "POST /models/{variant}/load and /unload by outcome (ok or the error code).",
            ["variant", "action", "outcome"], registry=r,
        )  # fmt: skip
        self.model_ready = Gauge("attnzoo_model_ready", "1 when the variant is loaded and warm, else 0.", ["variant"], registry=r)
        self.images_inferred = Counter(
            "attnzoo_images_inferred_total", "Images whose detections were answered (a request may carry several).", ["variant"], registry=r
        )
        build = build_info()
        Info("attnzoo_build", "The running build: package version and git commit (empty outside a checkout).", registry=r).info(
            {"version": build.version, "commit": build.revision or ""}
        )
        self.triton = TritonMetricsCollector()
        r.register(self.triton)
        self._unknown_seen: set[str] = set()
        self._unknown_lock = threading.Lock()

    def observe_request(self, variant: str, endpoint: str, status: str, protocol: str, seconds: float) -> None:
        """Count one finished request (``protocol`` from :data:`PROTOCOLS`; ``status`` an HTTP status
        code, or a gRPC status code's name) and its latency."""
        self.requests.labels(variant, endpoint, status, protocol).inc()
        self.request_duration.labels(variant, endpoint, protocol).observe(seconds)

    def first_unknown(self, kind: str) -> bool:
        """Whether ``kind`` (an unknown path or RPC) is asked for the first time (then remembered, up
        to :data:`UNKNOWN_KINDS_KEPT` kinds; beyond, every new one answers False)."""
        with self._unknown_lock:
            if kind in self._unknown_seen or len(self._unknown_seen) >= UNKNOWN_KINDS_KEPT:
                return False
            self._unknown_seen.add(kind)
            return True

    def observe_stages(self, variant: str, seconds: dict[str, float]) -> None:
        """Record one request's stage durations (keys from :data:`STAGES`)."""
        for stage, value in seconds.items():
            self.stage_duration.labels(variant, stage).observe(value)

    def observe_batch(self, variant: str, size: int) -> None:
        self.batch_size.labels(variant).observe(size)

    def endpoint(self) -> "MetricsEndpoint":
        return MetricsEndpoint(self.registry)


class MetricsEndpoint:
    """The exposition endpoint: prometheus-client's ASGI app (text or OpenMetrics, gzip) for one
    registry. A class, not the app function itself, so that Starlette routes to it as an ASGI app."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._app = make_asgi_app(registry)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)
