"""The registry's variants as the service holds them: one :class:`VariantSlot` each, with a
:class:`~app.variant_core.VariantCore` once the variant has loaded.

Start-up (a background thread, so ``/healthz`` answers while weights load): for every requested
variant, load the checkpoint from the weights dir (its sha256 checked against the file name),
run one warm-up forward, start its batcher, and only then mark it ``loaded``. A variant whose
weights are missing, refused or broken becomes ``unavailable`` with the reason and does not stop
the others. Variants of the registry that were not requested are listed as ``unavailable`` too,
so ``/models`` shows the whole registry; asking one of them for an answer is a 404
(:class:`VariantNotServedError`), since it will never load in this process.

Readiness (``/readyz``) follows Triton's ``--strict-readiness``: with ``ATTNZOO_STRICT_READINESS``
true (the default) the service is ready when every requested variant is loaded, with false when
at least one is.
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
    WeightsMissingError,
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

    def _mark_unavailable(self, slot: VariantSlot, reason: str, *, missing: bool = False) -> None:
        if missing and slot.weights_path is not None:
            slot.missing_weights = MissingWeights(slot.weights_path.parent, slot.weights_path.name, slot.entry.weights_url)
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
