"""``variant=auto``: the most accurate variant whose live latency fits the request's budget.

The rule, for a latency budget B (``budget_ms``; default ``ATTNZOO_DEFAULT_BUDGET_MS``):

1. Each loaded variant's latency is the p95 of its recent requests' in-service latencies
   (queue + preprocess + model + postprocess, i.e. queueing included; the last
   ``ATTNZOO_LATENCY_WINDOW`` requests, nearest-rank p95). At load, the warm-up forward is its
   first observation, so a variant counts only once it has been measured; without warm-up
   (``ATTNZOO_WARMUP=false``) a variant counts after its first request.
2. The variants whose p95 is at most B fit. The choice is the fitting one with the highest
   published box AP (ties: the lower p95); ``budget_met`` is true.
3. If none fits, the choice is the measured variant with the lowest p95, and ``budget_met`` is
   false. If none is measured yet, the first loaded variant in registry order, ``budget_met`` false.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Iterator, Sequence

from .metrics import ServiceMetrics
from .middleware import RequestRecord
from .model_pool import ModelPool
from .variant_core import VariantCore

AUTO_VARIANT = "auto"  # the variant name that asks the service to choose


@dataclass(frozen=True)
class VariantChoice:
    core: VariantCore
    budget_met: bool
    p95_s: float | None  # the chosen variant's latency estimate, seconds (None: not measured yet)


def choose_variant(cores: Sequence[VariantCore], budget_s: float) -> VariantChoice:
    """Apply the module's rule to the loaded ``cores`` (registry order; at least one)."""
    measured = [(core, p95) for core in cores if (p95 := core.latency.p95()) is not None]
    fitting = [(core, p95) for core, p95 in measured if p95 <= budget_s]
    if fitting:
        core, p95 = max(fitting, key=lambda pair: (_published_ap(pair[0]), -pair[1]))
        return VariantChoice(core, True, p95)
    if measured:
        core, p95 = min(measured, key=lambda pair: pair[1])
        return VariantChoice(core, False, p95)
    return VariantChoice(cores[0], False, None)


def _published_ap(core: VariantCore) -> float:
    box_ap = core.entry.published.box_ap
    return box_ap if box_ap is not None else -math.inf


@contextlib.contextmanager
def lease_variant(
    pool: ModelPool, name: str, *, budget_s: float, record: RequestRecord, metrics: ServiceMetrics
) -> Iterator[VariantCore]:
    """The core that answers a request for the variant ``name`` (or ``auto``, chosen here for
    ``budget_s``), held for the ``with`` block (``ModelPool.lease``); the variant, and for
    ``auto`` whether it meets the budget, go to the request's ``record`` and the metrics.

    Every front door resolves its variant here.

    Raises:
        UnknownVariantError, VariantNotServedError (404), VariantNotReadyError,
        NoVariantLoadedError (auto) (503).
    """
    if name == AUTO_VARIANT:
        choice = choose_variant(pool.cores(), budget_s)
        name = choice.core.variant
        record.budget_met = choice.budget_met
        metrics.auto_choices.labels(name, str(choice.budget_met).lower()).inc()
    record.variant = pool.slot(name).variant
    with pool.lease(record.variant) as core:
        yield core
