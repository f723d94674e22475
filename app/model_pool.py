"""The registry's variants as the service holds them: one :class:`VariantSlot` each, with a
:class:`~app.variant_core.VariantCore` once the variant has loaded.

Start-up (a background thread, so ``/healthz`` answers while weights load): for every requested
variant, load the checkpoint from the weights dir (its sha256 checked against the file name),
run one warm-up forward, start its batcher, and only then mark it ``loaded``. A variant whose
weights are missing, refused or broken becomes ``unavailable`` with the reason and does not stop
the others. Variants of the registry that were not requested are listed as ``unavailable`` too,
so ``/models`` shows the whole registry.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from model_zoo import (
    AttnzooError,
    Detector,
    Registry,
    VariantEntry,
    default_weights_dir,
    load_detector,
    resolve_device,
    weights_path_for,
)

from .batching import MicroBatcher
from .metrics import ServiceMetrics
from .settings import Settings
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


class NoVariantLoadedError(Exception):
    """No variant can answer now: every requested one is loading or unavailable."""

    retry_after_s = RETRY_AFTER_LOADING_S


@dataclass
class VariantSlot:
    """One registry variant and what the service knows about it; ``core`` once it is loaded."""

    entry: VariantEntry
    requested: bool
    state: VariantState
    reason: str | None = None  # why it is unavailable
    weights_path: Path | None = None  # where its checkpoint is (expected) to be
    core: VariantCore | None = None

    @property
    def variant(self) -> str:
        return self.entry.alias


class ModelPool:
    """Owns the cores; thread-safe to read while the loader thread works."""

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
        """Core of a variant that can answer now. Raises UnknownVariantError, VariantNotReadyError."""
        slot = self.slot(name)
        if slot.core is None:
            raise VariantNotReadyError(slot.variant, slot.state, slot.reason)
        return slot.core

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
        started = time.perf_counter()
        try:
            detector = load_detector(
                slot.entry.name,
                device=device,
                registry=self.registry,
                weights_dir=self.weights_dir,
                verify_hash=self.settings.verify_hash,
            )
            if self.settings.warmup:
                _warm_up(detector)
        except AttnzooError as exc:
            self._mark_unavailable(slot, str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - one broken variant must not stop the others
            logger.exception("loading %s failed", slot.variant)
            self._mark_unavailable(slot, f"failed to load: {type(exc).__name__}: {exc}")
            return
        variant = slot.variant
        batcher = MicroBatcher(
            detector.infer,
            max_batch=self.settings.max_batch,
            max_wait_s=self.settings.max_wait_ms / 1000.0,
            queue_size=self.settings.queue_size,
            name=variant,
            on_batch=lambda size, _seconds: self.metrics.observe_batch(variant, size),
        )
        self.metrics.queue_depth.labels(variant).set_function(batcher.qsize)
        core = VariantCore(
            detector, batcher, max_pixels=self.settings.max_pixels, load_seconds=time.perf_counter() - started
        )
        slot.weights_path, slot.reason = core.weights_path, None
        slot.core = core
        slot.state = VariantState.LOADED  # after the core: readers of the state find it
        self.metrics.model_load.labels(variant).set(core.load_seconds)
        self.metrics.model_ready.labels(variant).set(1)
        logger.info("loaded %s on %s in %.2f s (sha256 %s)", variant, core.device, core.load_seconds, core.sha256)

    def _mark_unavailable(self, slot: VariantSlot, reason: str) -> None:
        slot.state, slot.reason = VariantState.UNAVAILABLE, reason
        self.metrics.model_ready.labels(slot.variant).set(0)
        logger.warning("variant %s unavailable: %s", slot.variant, reason)


def _warm_up(detector: Detector) -> None:
    """One forward on a gray image of the test scale (long × short side), landscape."""
    long_side, short_side = detector.entry.arch.preprocess.scale
    image = np.full((short_side, long_side, 3), _WARMUP_GRAY, dtype=np.uint8)
    detector.infer([detector.prepare(image)])


def _expected_weights_path(entry: VariantEntry, weights_dir: Path) -> Path | None:
    try:
        return weights_path_for(entry, weights_dir)
    except AttnzooError:
        return None
