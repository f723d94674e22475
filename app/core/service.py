"""The core's one entry for every front door: open a ticket, run a typed request on it.

A front door (``/detect``, ``/compare``, ``/attention``, the v2 protocol over HTTP and gRPC)
parses its wire format and calls, in this order:

1. :meth:`InferenceService.open_ticket`: resolves the variant (a name, or ``auto`` under a
   latency budget) once, records it, refuses now what the variant's queue cannot take (429) and
   leases the variant for the request;
2. :meth:`InferenceService.detect` (or :meth:`attention`, :meth:`compare`): admits the request's
   images as a whole, checks their headers against the request's pixel budget, decodes, queues,
   waits, filters; records the stage metrics, the variant's statistics (``statistics.py``) and the
   request record; returns a typed outcome;
3. ``ticket.close()`` when the request ends (the HTTP server does it for the requests it carries).

Nothing here knows HTTP or gRPC.
"""

from __future__ import annotations

import asyncio
import time
from typing import Sequence

from starlette.concurrency import run_in_threadpool

from model_zoo import check_attention_query

from ..settings import Settings
from .decode import ImageHeader, decode_checked, read_header, read_headers
from .errors import ModelExecutionError, OverloadedError, ServiceNotStartedError, TooManyImagesError
from .memory import IdleMemoryRelease
from .metrics import ServiceMetrics
from .pool import VariantPool
from .record import RequestRecord
from .requests import AttentionOutcome, AttentionQuery, DetectOutcome, DetectParams, DetectRequest, ImageDetections
from .served_variant import ServedVariant
from .statistics import FailureReason, RequestStages, nanoseconds
from .ticket import Ticket
from .variant_choice import AUTO_VARIANT, choose_variant


class InferenceService:
    """The loaded variants (``pool``, None outside the app's lifespan) and what requests do with them."""

    def __init__(self, settings: Settings, metrics: ServiceMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self._pool: VariantPool | None = None
        self.memory = IdleMemoryRelease(0.0)

    @property
    def pool(self) -> VariantPool:
        """Raises ServiceNotStartedError outside the lifespan."""
        if self._pool is None:
            raise ServiceNotStartedError("the service has not started (its lifespan is not running)")
        return self._pool

    @property
    def started(self) -> bool:
        return self._pool is not None

    def start(self, pool: VariantPool) -> None:
        """Serve ``pool`` (loading in the background) until :meth:`stop`."""
        self._pool = pool
        self.memory = IdleMemoryRelease(self.settings.release_memory_idle_s)
        self.metrics.gpu_memory.devices = pool.cuda_devices
        self.metrics.triton.served = lambda: [(s.variant, s.statistics.snapshot(), s.batcher.qsize()) for s in pool.served_variants()]
        pool.start()

    def stop(self) -> None:
        """Stop the variants (blocks until loading ends) and the memory release."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()
        self.memory.close()

    # -- tickets -----------------------------------------------------------------------------

    def open_ticket(
        self, name: str, *, record: RequestRecord, budget_s: float | None = None, timeout_s: float | None = None
    ) -> Ticket:
        """The ticket of a request for the variant ``name`` (or ``auto``, chosen here for
        ``budget_s``; default ``ATTNZOO_DEFAULT_BUDGET_MS``). ``timeout_s``: the client's own time
        limit when shorter than ``ATTNZOO_REQUEST_TIMEOUT_S``.

        Raises:
            UnknownVariantError, VariantNotServedError (404), VariantNotReadyError,
            NoVariantLoadedError (auto), BatcherClosedError (503), OverloadedError (429).
        """
        pool = self.pool
        if name == AUTO_VARIANT:
            budget = budget_s if budget_s is not None else self.settings.default_budget_ms / 1000.0
            choice = choose_variant(pool.loaded(), budget)
            served = choice.served
            record.budget_met = choice.budget_met
            self.metrics.auto_choices.labels(served.variant, str(choice.budget_met).lower()).inc()
        else:
            served = pool.served(name)
        record.variant = served.variant
        return self._ticket(served, record, timeout_s)

    def open_tickets(self, names: Sequence[str], *, record: RequestRecord) -> list[Ticket]:
        """A ticket per named variant (each once, in the order named), or with no names one per
        loaded variant; the request's record names them in registry order.

        Raises:
            the errors of :meth:`open_ticket`; NoVariantLoadedError (no names, none loaded).
        """
        pool = self.pool
        served: dict[str, ServedVariant] = {}
        for name in names:
            variant = pool.served(name)
            served.setdefault(variant.variant, variant)
        chosen = list(served.values()) if names else pool.loaded()
        ran = {variant.variant for variant in chosen}
        # at most 2^N - 1 label values (15 for the bundled registry), whatever the order named
        record.variant = ",".join(variant for variant in pool.slots if variant in ran)
        tickets: list[Ticket] = []
        try:
            for variant in chosen:
                tickets.append(self._ticket(variant, record, None))
        except BaseException:
            for ticket in tickets:
                ticket.close()
            raise
        return tickets

    def _ticket(self, served: ServedVariant, record: RequestRecord, timeout_s: float | None) -> Ticket:
        started = time.monotonic()
        limit = self.settings.request_timeout_s if timeout_s is None else min(timeout_s, self.settings.request_timeout_s)
        try:
            served.batcher.check(started + limit)  # refused now, before any work on the request
        except OverloadedError:
            served.statistics.record_failure("REJECTED", 0)
            raise
        served.acquire()
        self.memory.started()
        inflight = self.metrics.inflight.labels(served.variant)
        inflight.inc()

        def end() -> None:
            inflight.dec()
            served.release()
            self.memory.ended()

        return Ticket(served, record, started=started, timeout_s=limit, on_close=end)

    # -- requests ----------------------------------------------------------------------------

    async def detect(self, ticket: Ticket, request: DetectRequest) -> DetectOutcome:
        """Run ``request``'s images through the ticket's variant: admitted as a whole (before any is
        decoded), headers checked against one pixel budget, then each image decoded, queued and
        filtered; the first failure fails the request and withdraws the other images.

        Raises:
            TooManyImagesError, OverloadedError (429), decode errors, ImageUnprocessableError,
            DeadlineExceededError, BatcherClosedError, ModelExecutionError.
        """
        served = ticket.served
        queue_size = served.batcher.queue_size
        if len(request.images) > queue_size:
            raise TooManyImagesError(len(request.images), queue_size)
        started = time.perf_counter()
        try:
            images = await self._detect_images(ticket, request)
        except BaseException as exc:
            served.statistics.record_failure(_failure_reason(exc), nanoseconds(time.perf_counter() - started))
            raise
        last = max(images, key=lambda image: image.latency_s)  # the request's answer waited for it
        served.statistics.record_success(
            len(images),
            nanoseconds(time.perf_counter() - started),
            RequestStages(
                compute_input=nanoseconds(last.seconds["preprocess"]),
                queue=nanoseconds(last.seconds["queue"]),
                compute_infer=nanoseconds(last.seconds["model"]),
                compute_output=nanoseconds(last.seconds["postprocess"]),
            ),
        )
        for image in images:
            self.metrics.observe_stages(served.variant, image.seconds)
        self.metrics.images_inferred.labels(served.variant).inc(len(images))
        outcome = DetectOutcome(served.variant, served.sha256, served.weights_source, images)
        ticket.record.batch_size = outcome.batch_size
        return outcome

    async def _detect_images(self, ticket: Ticket, request: DetectRequest) -> list[ImageDetections]:
        served = ticket.served
        place = ticket.hold(len(request.images))
        headers = await self._headers(request.images, served.max_pixels)
        tasks = [
            asyncio.ensure_future(served.detect_image(image, header, request.params, ticket.deadline, place))
            for image, header in zip(request.images, headers)
        ]
        try:
            return list(await asyncio.gather(*tasks))
        finally:
            for task in tasks:
                task.cancel()

    async def compare(self, tickets: Sequence[Ticket], image: bytes, params: DetectParams) -> tuple[list[DetectOutcome], float]:
        """One image through each ticket's variant, one variant after the other (so that each one's
        measured latency is its own), each with a whole time limit; the image is decoded once.
        Returns the outcomes, in the tickets' order, and the seconds decoding took.

        Raises:
            the errors of :meth:`detect`.
        """
        for ticket in tickets:
            ticket.hold(1)
        started = time.perf_counter()
        header = await run_in_threadpool(read_header, image, max_pixels=self.settings.max_pixels)
        pixels = await run_in_threadpool(decode_checked, image, header, max_pixels=self.settings.max_pixels)
        decode_s = time.perf_counter() - started
        outcomes = []
        for ticket in tickets:
            ticket.renew_deadline(self.settings.request_timeout_s)
            outcomes.append(await self.detect(ticket, DetectRequest([pixels], params)))
        return outcomes, decode_s

    def check_attention_query(self, ticket: Ticket, stage: int | None, block: int, head: int | None) -> int:
        """The stage the query names (default: the first with attention). Raises AttentionQueryError."""
        return check_attention_query(ticket.served.detector, stage, block, head)

    async def attention(self, ticket: Ticket, image: bytes, query: AttentionQuery) -> AttentionOutcome:
        """The attention map of ``query`` on ``image``, computed in the variant's device turn while
        the request holds a place in its queue.

        Raises:
            OverloadedError, decode errors, AttentionQueryError, DeadlineExceededError.
        """
        served = ticket.served
        ticket.hold(1)
        (header,) = await self._headers([image], served.max_pixels)
        return await served.attention(image, header, query, ticket.deadline)

    @staticmethod
    async def _headers(images: Sequence[bytes | object], max_pixels: int) -> list[ImageHeader | None]:
        """The headers of the encoded ones among ``images`` (None for decoded ones), checked
        against one pixel budget, in a worker thread."""
        encoded = [image for image in images if isinstance(image, bytes)]
        if not encoded:
            return [None] * len(images)
        read = iter(await run_in_threadpool(read_headers, encoded, max_pixels=max_pixels))
        return [next(read) if isinstance(image, bytes) else None for image in images]


def _failure_reason(exc: BaseException) -> FailureReason:
    """Triton's failure reason of a request that reached the variant and failed with ``exc``."""
    if isinstance(exc, OverloadedError):
        return "REJECTED"
    if isinstance(exc, asyncio.CancelledError):
        return "CANCELED"
    if isinstance(exc, ModelExecutionError):
        return "BACKEND"
    return "OTHER"
