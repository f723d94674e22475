"""The registry's variants as the service holds them: one :class:`VariantSlot` each, with a
:class:`~app.variant_core.VariantCore` once the variant has loaded.

Start-up (a background thread, so ``/healthz`` answers while weights load): for every requested
variant, load the checkpoint from the weights dir (its sha256 checked against the file name),
run one warm-up forward, start its batcher, and only then mark it ``loaded``. A variant whose
weights are missing, refused or broken becomes ``unavailable`` with the reason and does not stop
the others. Variants of the registry that were not requested are listed as ``unavailable`` too,
so ``/models`` shows the whole registry; asking one of them for an answer is a 404
(:class:`VariantNotServedError`), since it will never load in this process.

At run time ``load`` (re)reads a variant's weights, verified as at start, and swaps the new core in
while requests that already hold the old one finish on it; ``unload`` takes a variant out and
frees its memory once its last request is done. A failed load leaves the old core serving.

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
from typing import Iterator, Sequence

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

from .batching import MicroBatcher
from .metrics import ServiceMetrics
from .settings import Settings
from .latency import LatencyWindow
from .variant_core import VariantCore

logger = logging.getLogger("attnzoo.models")

# Retry-After (seconds) for a variant that is not loaded: soon while loading, later when it failed
RETRY_AFTER_LOADING_S = 5
RETRY_AFTER_UNAVAILABLE_S = 60
_WARMUP_GRAY = 114  # pixel value of the warm-up image


class VariantState(str, enum.Enum):
    LOADING = "loading"
    LOADED = "loaded"
    UNAVAILABLE = "unavailable"


class VariantNotReadyError(Exception):
    """The variant exists in the registry but cannot answer now."""

    def __init__(self, variant: str, state: VariantState, reason: str | None) -> None:
        why = "is still loading" if state is VariantState.LOADING else f"is unavailable: {reason}"
        super().__init__(f"variant {variant!r} {why}")
        self.variant = variant
        self.state = state
        self.retry_after_s = RETRY_AFTER_LOADING_S if state is VariantState.LOADING else RETRY_AFTER_UNAVAILABLE_S


class VariantNotServedError(Exception):
    """The variant is in the registry, but this process was not started with it: it never loads here."""

    def __init__(self, variant: str, served: Sequence[str]) -> None:
        super().__init__(
            f"variant {variant!r} is not served by this process, which was started with the variants "
            f"{', '.join(served)} (ATTNZOO_VARIANTS); restart it with {variant} among them (or without "
            "ATTNZOO_VARIANTS: every variant) to serve it"
        )
        self.variant = variant
        self.served = list(served)


class NoVariantLoadedError(Exception):
    """No variant can answer now: every requested one is loading or unavailable."""

    retry_after_s = RETRY_AFTER_LOADING_S


@dataclass(frozen=True)
class MissingWeights:
    """Where a requested variant's checkpoint was looked for and not found."""

    directory: Path  # the weights dir (ATTNZOO_WEIGHTS_DIR)
    file: str  # the file name the registry gives it (hash prefix included)
    url: str | None  # where `attnzoo fetch` downloads it from

    def to_dict(self) -> dict[str, str | None]:
        return {"directory": str(self.directory), "file": self.file, "url": self.url}


@dataclass
class VariantSlot:
    """One registry variant and what the service knows about it; ``core`` once it is loaded."""

    entry: VariantEntry
    requested: bool
    state: VariantState
    reason: str | None = None  # why it is unavailable
    weights_path: Path | None = None  # where its checkpoint is (expected) to be
    missing_weights: MissingWeights | None = None  # set when it is unavailable because the file is missing
    core: VariantCore | None = None

    @property
    def variant(self) -> str:
        return self.entry.alias

    @property
    def ready(self) -> bool:
        """Loaded and warmed up: it answers requests."""
        return self.state is VariantState.LOADED


class ControlBusyError(Exception):
    """Another load or unload of the pool is running; try again when it is done."""

    retry_after_s = RETRY_AFTER_LOADING_S


class WeightsRefusedError(Exception):
    """A load found weights it cannot serve; the variant's previous model (if any) keeps serving."""


class ModelPool:
    """Owns the cores; thread-safe to read while the loader thread or a control action works."""

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
        self._stop = threading.Event()
        self._loader: threading.Thread | None = None
        self._control = threading.Lock()  # one load or unload at a time (they take seconds)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Load the requested variants in a background thread."""
        self._loader = threading.Thread(target=self._load_all, name="model-loader", daemon=True)
        self._loader.start()

    def close(self) -> None:
        """Stop loading, stop the cores (images still waiting get 503)."""
        self._stop.set()
        if self._loader is not None:
            self._loader.join()
        for slot in self.slots.values():
            if slot.core is not None:
                slot.core.close()

    # -- queries ---------------------------------------------------------------------------

    def requested_slots(self) -> list[VariantSlot]:
        return [slot for slot in self.slots.values() if slot.requested]

    def slot(self, name: str) -> VariantSlot:
        """Slot of a short or full variant name. Raises UnknownVariantError."""
        return self.slots[self.registry.resolve(name).alias]

    def core(self, name: str) -> VariantCore:
        """Core of a variant that can answer now.

        Raises:
            UnknownVariantError, VariantNotServedError (not requested), VariantNotReadyError.
        """
        slot = self.slot(name)
        if not slot.requested:
            raise VariantNotServedError(slot.variant, [served.variant for served in self.requested_slots()])
        if slot.core is None:
            raise VariantNotReadyError(slot.variant, slot.state, slot.reason)
        return slot.core

    @contextlib.contextmanager
    def lease(self, name: str) -> Iterator[VariantCore]:
        """The core of ``name`` (as :meth:`core`), kept alive for the ``with`` block: a load that
        replaces it, or an unload, lets the block finish on it before retiring it."""
        core = self.core(name)
        core.acquire()
        try:
            yield core
        finally:
            core.release()

    @contextlib.contextmanager
    def leases(self, names: Sequence[str] | None = None) -> Iterator[list[VariantCore]]:
        """:meth:`cores`, each held as in :meth:`lease`."""
        with contextlib.ExitStack() as stack:
            cores = self.cores(names)
            for core in cores:
                core.acquire()
                stack.callback(core.release)
            yield cores

    def cores(self, names: Sequence[str] | None = None) -> list[VariantCore]:
        """Cores that can answer now: the named ones (in the order named, each must be loaded),
        or, with no names, every loaded one in registry order.

        Raises:
            UnknownVariantError, VariantNotReadyError (a named one), NoVariantLoadedError (none loaded).
        """
        if names:
            named: dict[str, VariantCore] = {}
            for name in names:
                core = self.core(name)
                named.setdefault(core.variant, core)
            return list(named.values())
        cores = [slot.core for slot in self.slots.values() if slot.core is not None]
        if not cores:
            why = "; ".join(f"{variant}: {reason}" for variant, reason in self.readiness().items())
            raise NoVariantLoadedError(f"no variant is loaded ({why or 'none was requested'})")
        return cores

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

    def cuda_devices(self) -> list[str]:
        devices = {slot.core.device for slot in self.slots.values() if slot.core is not None}
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
            core = self._build_core(slot.entry, device)
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
        self._install(slot, core)

    def _build_core(self, entry: VariantEntry, device: str) -> VariantCore:
        """Load, verify and warm up ``entry``'s detector; its core, batcher started.

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
        latency = LatencyWindow(self.settings.latency_window)
        if self.settings.warmup:
            latency.observe(_warm_up(detector))  # a measured variant can be chosen by variant=auto
        variant = entry.alias
        batcher = MicroBatcher(
            detector.infer,
            max_batch=self.settings.max_batch,
            max_wait_s=self.settings.max_wait_ms / 1000.0,
            queue_size=self.settings.queue_size,
            name=variant,
            on_batch=lambda size, _seconds: self.metrics.observe_batch(variant, size),
        )
        return VariantCore(
            detector,
            batcher,
            max_pixels=self.settings.max_pixels,
            load_seconds=time.perf_counter() - started,
            latency=latency,
            weights_source=source,
        )

    def _install(self, slot: VariantSlot, core: VariantCore) -> None:
        """Make ``core`` the one ``slot`` answers with."""
        variant = slot.variant
        self.metrics.queue_depth.labels(variant).set_function(core.batcher.qsize)
        slot.weights_path, slot.reason, slot.missing_weights = core.weights_path, None, None
        slot.core = core
        slot.state = VariantState.LOADED  # after the core: readers of the state find it
        self.metrics.model_load.labels(variant).set(core.load_seconds)
        self.metrics.model_ready.labels(variant).set(1)
        logger.info("loaded %s on %s in %.2f s (sha256 %s)", variant, core.device, core.load_seconds, core.sha256)

    # -- control (POST /models/{variant}/load and /unload) -----------------------------------

    def load(self, name: str) -> VariantSlot:
        """(Re)load ``name`` from the weights dir, verified as at start, and serve it.

        Requests holding the previous core finish on it (it is retired in the background); new
        ones get the new core. Blocks for the load and warm-up.

        Raises:
            UnknownVariantError, ControlBusyError, WeightsRefusedError (the previous core, if
            any, keeps serving).
        """
        slot = self.slot(name)
        with self._exclusive_control():
            try:
                core = self._build_core(slot.entry, str(resolve_device(self.settings.device)))
            except Exception as exc:  # noqa: BLE001 - the reason goes to the caller; the old core stays
                raise WeightsRefusedError(f"{slot.variant}: {exc}") from exc
            previous = slot.core
            slot.requested = True
            self._install(slot, core)
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
            previous = slot.core
            slot.core, slot.requested = None, False
            slot.state, slot.reason = VariantState.UNAVAILABLE, "unloaded (POST /models/{variant}/load serves it again)"
            self.metrics.model_ready.labels(slot.variant).set(0)
            self.metrics.queue_depth.labels(slot.variant).set_function(lambda: 0)  # drops the old batcher
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
            slot.missing_weights = MissingWeights(slot.weights_path.parent, slot.weights_path.name, slot.entry.weights_url)
        slot.state, slot.reason = VariantState.UNAVAILABLE, reason
        self.metrics.model_ready.labels(slot.variant).set(0)
        logger.warning("variant %s unavailable: %s", slot.variant, reason)


def _warm_up(detector: Detector) -> float:
    """One forward on a gray image of the test scale (long × short side), landscape; its seconds."""
    long_side, short_side = detector.entry.arch.preprocess.scale
    image = np.full((short_side, long_side, 3), _WARMUP_GRAY, dtype=np.uint8)
    started = time.perf_counter()
    detector.infer([detector.prepare(image)])
    return time.perf_counter() - started


def _expected_weights_path(entry: VariantEntry, weights_dir: Path) -> Path | None:
    try:
        return weights_path_for(entry, weights_dir)
    except AttnzooError:
        return None
