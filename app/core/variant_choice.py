"""``variant=auto``: the most accurate variant whose live latency fits the request's budget.

The rule, for a latency budget B (``budget_ms``; default ``ATTNZOO_DEFAULT_BUDGET_MS``):

1. Each loaded variant's latency is the p95 of its recent requests' in-service latencies
   (queue + preprocess + model + postprocess, i.e. queueing included; the last
   ``ATTNZOO_LATENCY_WINDOW`` requests, nearest-rank p95). At load, the warm-up forward (the
   second one: the first pays for the process's cold start) is its first observation, so a
   variant counts only once it has been measured; without warm-up (``ATTNZOO_WARMUP=false``) a
   variant counts after its first request.
2. The variants whose p95 is at most B fit. The choice is the fitting one with the highest
   published box AP (ties: the lower p95); ``budget_met`` is true.
3. If none fits, the choice is the measured variant with the lowest p95, and ``budget_met`` is
   false. If none is measured yet, the first loaded variant in registry order, ``budget_met`` false.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass
from typing import Generic, Protocol, Sequence, TypeVar

AUTO_VARIANT = "auto"  # the variant name that asks the service to choose


class LatencyWindow:
    """The last ``size`` latencies of one variant (seconds); thread-safe."""

    def __init__(self, size: int) -> None:
        self._seconds: deque[float] = deque(maxlen=size)
        self._lock = threading.Lock()

    def observe(self, seconds: float) -> None:
        with self._lock:
            self._seconds.append(seconds)

    def p95(self) -> float | None:
        """Nearest-rank 95th percentile (seconds); None before the first observation."""
        with self._lock:
            ordered = sorted(self._seconds)
        if not ordered:
            return None
        return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


class _Published(Protocol):
    @property
    def box_ap(self) -> float | None: ...


class _Entry(Protocol):
    @property
    def published(self) -> _Published: ...


class Candidate(Protocol):
    """What the rule reads of a served variant."""

    @property
    def entry(self) -> _Entry: ...

    @property
    def latency(self) -> LatencyWindow: ...


C = TypeVar("C", bound=Candidate)


@dataclass(frozen=True)
class VariantChoice(Generic[C]):
    served: C
    budget_met: bool
    p95_s: float | None  # the chosen variant's latency estimate, seconds (None: not measured yet)


def choose_variant(candidates: Sequence[C], budget_s: float) -> VariantChoice[C]:
    """Apply the module's rule to the loaded ``candidates`` (registry order; at least one)."""
    measured = [(served, p95) for served in candidates if (p95 := served.latency.p95()) is not None]
    fitting = [(served, p95) for served, p95 in measured if p95 <= budget_s]
    if fitting:
        served, p95 = max(fitting, key=lambda pair: (_published_ap(pair[0]), -pair[1]))
        return VariantChoice(served, True, p95)
    if measured:
        served, p95 = min(measured, key=lambda pair: pair[1])
        return VariantChoice(served, False, p95)
    return VariantChoice(candidates[0], False, None)


def _published_ap(served: Candidate) -> float:
    box_ap = served.entry.published.box_ap
    return box_ap if box_ap is not None else -math.inf
