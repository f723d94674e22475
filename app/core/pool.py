"""The registry's variants as the service holds them: one :class:`VariantSlot` each, with a
:class:`~app.core.served_variant.ServedVariant` once the variant has loaded.

Start-up (a background thread, so ``/healthz`` answers while weights load): for every requested
variant, load the checkpoint from the weights dir (its sha256 checked against the file name),
warm it up (two forwards: the first pays for the process's cold start, the second is measured and
seeds what admission and ``variant=auto`` know of it), start its batcher,
and only then mark it ``loaded``. A variant whose weights are missing, refused or broken becomes
``unavailable`` with the reason and does not stop the others. Variants of the registry that were
not requested are listed as ``unavailable`` too, so ``/models`` shows the whole registry; asking one
of them for an answer is a 404 (:class:`VariantNotServedError`), since it will never load here.

At run time ``load`` (re)reads a variant's weights, verified as at start, and swaps the new one in
while requests that already hold the old one finish on it (a variant that was not serving is
``loading`` meanwhile); ``unload`` takes a variant out and frees its memory once its last request
is done. A failed load leaves the old one serving. Listeners (:meth:`VariantPool.on_change`) hear
of every change of a variant's state.

Every variant on one device takes turns on it (``device_lane``), so that each one's admission sees
the whole device's backlog.

Readiness (``/readyz``) follows Triton's ``--strict-readiness``: with ``ATTNZOO_STRICT_READINESS``
true (the default) the service is ready when every requested variant is loaded, with false when
at least one is.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from model_zoo import (
    AttnzooError,
    Detector,
    Registry,
    VariantEntry,
    WeightsMissingError,
    default_weights_dir,
    load_detector,
    release_freed_memory,
    resolve_device,
    weights_or_stand_in,
    weights_path_for,
    weights_source,
)

from ..settings import Settings
from .batching import MicroBatcher
from .device_lane import DeviceLane
from .errors import (
    ControlBusyError,
    NoVariantLoadedError,
    VariantNotReadyError,
    VariantNotServedError,
    WeightsRefusedError,
)
from .metrics import ServiceMetrics
from .served_variant import ServedVariant
from .statistics import InferenceStatistics
from .variant_choice import LatencyWindow

logger = logging.getLogger("attnzoo.models")

_WARMUP_GRAY = 114  # pixel value of the warm-up image
WEIGHTS_DIR_NAME = "ATTNZOO_WEIGHTS_DIR"  # how answers name the weights dir (its path is only logged)


class VariantState(str, enum.Enum):
    LOADING = "loading"
    LOADED = "loaded"
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True)
class MissingWeights:
    """Which checkpoint file a requested variant needs in the weights dir, and where it comes from."""

    file: str  # the file name the registry gives it (hash prefix included)
    url: str | None  # where `attnzoo fetch` downloads it from

    def to_dict(self) -> dict[str, str | None]:
        return {"file": self.file, "url": self.url}


@dataclass
class VariantSlot:
    """One registry variant and what the service knows about it; ``served`` once it is loaded."""

    entry: VariantEntry
    requested: bool
    state: VariantState
    reason: str | None = None  # why it is unavailable (paths in the weights dir shown by name)
    weights_path: Path | None = None  # where its checkpoint is (expected) to be
    missing_weights: MissingWeights | None = None  # set when it is unavailable because the file is missing
    served: ServedVariant | None = None

    @property
    def variant(self) -> str:
        return self.entry.alias

    @property
    def ready(self) -> bool:
        """Loaded and warmed up: it answers requests."""
        return self.state is VariantState.LOADED

    @property
    def weights_file(self) -> str | None:
        """The checkpoint's file name (its directory is the weights dir, or ``demo/`` in it)."""
        if self.weights_path is None:
            return None
        return self.weights_path.name if self.weights_path.parent.name != "demo" else f"demo/{self.weights_path.name}"


class VariantPool:
    """Owns the served variants; thread-safe to read while the loader thread or a control action works."""

    def __init__(self, registry: Registry, requested: Sequence[VariantEntry], settings: Settings, metrics: ServiceMetrics) -> None:
        self.registry = registry
        self.settings = settings
        self.metrics = metrics
        self.weights_dir = Path(settings.weights_dir) if settings.weights_dir is not None else default_weights_dir()
        wanted = {entry.name for entry in requested}
        self.slots: dict[str, VariantSlot] = {}
        for entry in registry:
            requested_here = entry.name in wanted
            self.slots[entry.alias] = VariantSlot(
                entry=entry,
                requested=requested_here,
                state=VariantState.LOADING if requested_here else VariantState.UNAVAILABLE,
                reason=None if requested_here else "not among the variants this service was started with (ATTNZOO_VARIANTS)",
                weights_path=_expected_weights_path(entry, self.weights_dir),
            )
            metrics.model_ready.labels(entry.alias).set(0)
        self.lanes: dict[str, DeviceLane] = {}
        self._stop = threading.Event()
        self._loader: threading.Thread | None = None
        self._control = threading.Lock()  # one load or unload at a time (they take seconds)
        self._listeners: list[Callable[[], None]] = []

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Load the requested variants in a background thread."""
        self._loader = threading.Thread(target=self._load_all, name="model-loader", daemon=True)
        self._loader.start()

    def close(self) -> None:
        """Stop loading, stop the served variants (images still waiting get 503)."""
        self._stop.set()
        if self._loader is not None:
            self._loader.join()
        for slot in self.slots.values():
            if slot.served is not None:
                slot.served.close()

    # -- queries ---------------------------------------------------------------------------

    def requested_slots(self) -> list[VariantSlot]:
        return [slot for slot in self.slots.values() if slot.requested]

    def slot(self, name: str) -> VariantSlot:
        """Slot of a short or full variant name. Raises UnknownVariantError."""
        return self.slots[self.registry.resolve(name).alias]

    def served(self, name: str) -> ServedVariant:
        """The served variant ``name``, which can answer now.

        Raises:
            UnknownVariantError, VariantNotServedError (not requested), VariantNotReadyError.
        """
        slot = self.slot(name)
        if not slot.requested:
            raise VariantNotServedError(slot.variant, [served.variant for served in self.requested_slots()])
        if slot.served is None:
            raise VariantNotReadyError(slot.variant, slot.state is VariantState.LOADING, slot.reason)
        return slot.served

    def loaded(self) -> list[ServedVariant]:
        """Every variant that can answer now, in registry order.

        Raises:
            NoVariantLoadedError: none can.
        """
        served = [slot.served for slot in self.slots.values() if slot.served is not None]
        if not served:
            why = "; ".join(f"{variant}: {reason}" for variant, reason in self.readiness().items())
            raise NoVariantLoadedError(f"no variant is loaded ({why or 'none was requested'})")
        return served

    @contextlib.contextmanager
    def lease(self, served: ServedVariant) -> Iterator[ServedVariant]:
        """Hold ``served`` for the ``with`` block: a load that replaces it, or an unload, lets the
        block finish on it before retiring it."""
        served.acquire()
        try:
            yield served
        finally:
            served.release()

    def is_ready(self, *, strict: bool) -> bool:
        """Strict: every requested variant is loaded; not strict: at least one variant is."""
        slots = self.requested_slots()
        return all(slot.ready for slot in slots) if strict else any(slot.ready for slot in slots)

    def readiness(self) -> dict[str, str]:
        """Why the service is not ready: variant → reason; empty when every requested one is loaded."""
        reasons: dict[str, str] = {}
        for slot in self.requested_slots():
            if slot.state is VariantState.LOADING:
                reasons[slot.variant] = "loading"
            elif slot.state is VariantState.UNAVAILABLE:
                reasons[slot.variant] = f"unavailable: {slot.reason}"
        return reasons

    def served_variants(self) -> list[ServedVariant]:
        """The variants that can answer now, in registry order (none: an empty list)."""
        return [slot.served for slot in self.slots.values() if slot.served is not None]

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` after every change of a variant's state, from the thread that made it
        (the loader, or the one running a load or unload); it must be quick and must not raise."""
        self._listeners.append(listener)

    def _changed(self) -> None:
        for listener in self._listeners:
            try:
                listener()
            except Exception:  # noqa: BLE001 - a listener must never break loading
                logger.exception("a pool state listener failed")

    def cuda_devices(self) -> list[str]:
        devices = {slot.served.device for slot in self.slots.values() if slot.served is not None}
        return sorted(device for device in devices if device.startswith("cuda"))

    # -- loading ---------------------------------------------------------------------------

    def _load_all(self) -> None:
        with self._control:  # control actions wait for the start-up loading (ControlBusyError)
            self._load_requested()

    def _load_requested(self) -> None:
        try:
            device = str(resolve_device(self.settings.device))
        except AttnzooError as exc:
            for slot in self.requested_slots():
                self._mark_unavailable(slot, str(exc))
            return
        for slot in self.requested_slots():
            if self._stop.is_set():
                self._mark_unavailable(slot, "service is shutting down")
                continue
            self._load(slot, device)

    def _load(self, slot: VariantSlot, device: str) -> None:
        try:
            served = self._build(slot.entry, device)
        except WeightsMissingError as exc:
            self._mark_unavailable(slot, str(exc), missing=True)
            return
        except AttnzooError as exc:
            self._mark_unavailable(slot, str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - one broken variant must not stop the others
            logger.exception("loading %s failed", slot.variant)
            self._mark_unavailable(slot, f"failed to load: {type(exc).__name__}: {exc}")
            return
        self._install(slot, served)

    def _lane(self, device: str) -> DeviceLane:
        """The turn-taking of ``device`` (called with the control lock held: start-up, load)."""
        return self.lanes.setdefault(device, DeviceLane(device))

    def _build(self, entry: VariantEntry, device: str) -> ServedVariant:
        """Load, verify and warm up ``entry``'s detector; the served variant, its batcher started.

        Raises:
            AttnzooError (missing, refused or broken weights), or what the model raised.
        """
        started = time.perf_counter()
        path = weights_or_stand_in(entry, self.weights_dir, demo=self.settings.demo)
        detector = load_detector(
            entry.name,
            path,
            device=device,
            registry=self.registry,
            verify_hash=self.settings.verify_hash,
            cpu_kernels=self.settings.cpu_kernels,
        )
        source = weights_source(entry, path, sha256=detector.sha256)
        if source == "synthetic":
            logger.warning("%s serves synthetic stand-in weights (%s): its detections mean nothing (--demo)", entry.alias, path)
        variant = entry.alias
        lane = self._lane(str(detector.device))
        statistics = InferenceStatistics()

        def on_batch(size: int, seconds: float) -> None:
            self.metrics.observe_batch(variant, size)
            statistics.record_execution(size, seconds)

        batcher = MicroBatcher(
            detector.infer,
            max_batch=self.settings.max_batch,
            max_wait_s=self.settings.max_wait_ms / 1000.0,
            queue_size=self.settings.queue_size,
            name=variant,
            lane=lane,
            spread_allowance=self.settings.admission_spread_allowance,
            min_spread=self.settings.admission_min_spread,
            retry_window_s=self.settings.request_timeout_s,
            on_batch=on_batch,
        )
        latency = LatencyWindow(self.settings.latency_window)
        if self.settings.warmup:
            warm_s = warm_up(detector)
            batcher.cost.observe(1, warm_s)  # admission knows the variant from its first request on
            latency.observe(warm_s)  # a measured variant can be chosen by variant=auto
        return ServedVariant(
            detector,
            batcher,
            max_pixels=self.settings.max_pixels,
            load_seconds=time.perf_counter() - started,
            latency=latency,
            weights_source=source,
            statistics=statistics,
        )

    def _install(self, slot: VariantSlot, served: ServedVariant) -> None:
        """Make ``served`` the one ``slot`` answers with."""
        variant = slot.variant
        self.metrics.queue_depth.labels(variant).set_function(served.batcher.qsize)
        slot.weights_path, slot.reason, slot.missing_weights = served.weights_path, None, None
        slot.served = served
        slot.state = VariantState.LOADED  # after the variant: readers of the state find it
        self.metrics.model_load.labels(variant).set(served.load_seconds)
        self.metrics.model_ready.labels(variant).set(1)
        logger.info(
            "loaded %s from %s on %s in %.2f s (sha256 %s)", variant, served.weights_path, served.device, served.load_seconds, served.sha256
        )
        self._changed()

    # -- control (POST /models/{variant}/load and /unload) -----------------------------------

    def load(self, name: str) -> VariantSlot:
        """(Re)load ``name`` from the weights dir, verified as at start, and serve it.

        Requests holding the previous one finish on it (it is retired in the background); new
        ones get the new one. Blocks for the load and warm-up.

        Raises:
            UnknownVariantError, ControlBusyError, WeightsRefusedError (the previous one, if
            any, keeps serving).
        """
        slot = self.slot(name)
        with self._exclusive_control():
            before = slot.state, slot.reason
            if slot.served is None:
                slot.state, slot.reason = VariantState.LOADING, None
                self._changed()
            try:
                served = self._build(slot.entry, str(resolve_device(self.settings.device)))
            except Exception as exc:  # noqa: BLE001 - the reason goes to the caller; the old one stays
                if slot.served is None:
                    slot.state, slot.reason = before
                    self._changed()
                raise WeightsRefusedError(f"{slot.variant}: {self._public(str(exc))}") from exc
            previous = slot.served
            slot.requested = True
            self._install(slot, served)
            if previous is not None:
                threading.Thread(
                    target=previous.retire, args=(self.settings.request_timeout_s,), name=f"retire-{slot.variant}", daemon=True
                ).start()
            return slot

    def unload(self, name: str) -> VariantSlot:
        """Stop serving ``name``; once its last request is done, free its memory (blocks until then).

        Raises:
            UnknownVariantError, ControlBusyError.
        """
        slot = self.slot(name)
        with self._exclusive_control():
            previous = slot.served
            slot.served, slot.requested = None, False
            slot.state, slot.reason = VariantState.UNAVAILABLE, "unloaded (POST /models/{variant}/load serves it again)"
            self.metrics.model_ready.labels(slot.variant).set(0)
            self.metrics.queue_depth.labels(slot.variant).set_function(lambda: 0)  # drops the old batcher
            self._changed()
            if previous is not None:
                previous.retire(self.settings.request_timeout_s)
                del previous
                release_freed_memory()
            logger.info("unloaded %s", slot.variant)
            return slot

    @contextlib.contextmanager
    def _exclusive_control(self) -> Iterator[None]:
        if not self._control.acquire(blocking=False):
            raise ControlBusyError("another load or unload is running; retry when it is done")
        try:
            yield
        finally:
            self._control.release()

    def _mark_unavailable(self, slot: VariantSlot, reason: str, *, missing: bool = False) -> None:
        if missing and slot.weights_path is not None:
            slot.missing_weights = MissingWeights(slot.weights_path.name, slot.entry.weights_url)
        slot.state, slot.reason = VariantState.UNAVAILABLE, self._public(reason)
        self.metrics.model_ready.labels(slot.variant).set(0)
        logger.warning("variant %s unavailable: %s", slot.variant, reason)
        self._changed()

    def _public(self, reason: str) -> str:
        """``reason`` as answers show it: the weights dir named, not its path (that is only logged)."""
        return reason.replace(str(self.weights_dir), WEIGHTS_DIR_NAME)


def warm_up(detector: Detector) -> float:
    """Two forwards on a gray image of the test scale (long × short side), landscape; the seconds
    of the second (the first pays for the process's cold start).

    Not in the device's turn: a variant being loaded must not wait behind the device's backlog
    (a reload would wait for every queued forward). On a busy device the figure is then
    pessimistic, and the variant's own forwards correct it."""
    long_side, short_side = detector.entry.arch.preprocess.scale
    prepared = detector.prepare(np.full((short_side, long_side, 3), _WARMUP_GRAY, dtype=np.uint8))
    detector.infer([prepared])
    started = time.perf_counter()
    detector.infer([prepared])
    return time.perf_counter() - started


def _expected_weights_path(entry: VariantEntry, weights_dir: Path) -> Path | None:
    try:
        return weights_path_for(entry, weights_dir)
    except AttnzooError:
        return None
