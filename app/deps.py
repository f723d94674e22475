"""Shared dependencies as ``Annotated`` aliases: the routes' only way to reach the app's state.

Every dependency is ``async def``, also those that do not await: FastAPI runs a plain ``def``
dependency in a worker thread, a thread hop per dependency per request for reading an attribute.

:data:`VariantDep` resolves the ``variant`` query parameter once per request: an unknown name, or
one this process was not started with, is a 404 and a variant that cannot answer now a 503, all
raised here; ``auto`` lets the service choose by the request's latency budget
(``app/variant_choice.py``). The variant is recorded for the access log, and the route gets the
variant's :class:`~app.variant_core.VariantCore`, held for the request, so that a model being
replaced or unloaded lets it finish first.
"""

from __future__ import annotations

from typing import Annotated, AsyncIterator

from fastapi import Depends, Query, Request

from .errors import ServiceNotStartedError
from .measured_figures import MeasuredFigures
from .metrics import ServiceMetrics
from .middleware import RequestRecord, record_of
from .model_pool import ModelPool
from .settings import Settings, get_app_settings
from .variant_choice import lease_variant
from .variant_core import VariantCore


async def get_pool(request: Request) -> ModelPool:
    pool = getattr(request.app.state, "pool", None)
    if pool is None:
        raise ServiceNotStartedError("the service has not started (its lifespan is not running)")
    return pool


async def get_metrics(request: Request) -> ServiceMetrics:
    return request.app.state.metrics


async def get_measured(request: Request) -> MeasuredFigures:
    return request.app.state.measured


async def get_record(request: Request) -> RequestRecord:
    """This request's access-log record (made by ``RequestContextMiddleware``)."""
    record = record_of(request.scope)
    if record is None:  # an app used without its middleware (never in the service)
        record = request.scope.setdefault("state", {})["record"] = RequestRecord(request_id="")
    return record


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
PoolDep = Annotated[ModelPool, Depends(get_pool)]
MetricsDep = Annotated[ServiceMetrics, Depends(get_metrics)]
MeasuredDep = Annotated[MeasuredFigures, Depends(get_measured)]
RecordDep = Annotated[RequestRecord, Depends(get_record)]


async def get_variant(
    variant: Annotated[
        str, Query(description="short or full variant name, e.g. attn1111-dcn, or auto (the service chooses by budget_ms)")
    ],
    pool: PoolDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    record: RecordDep,
    budget_ms: Annotated[
        float | None,
        Query(gt=0, description="variant=auto: latency budget in ms (default ATTNZOO_DEFAULT_BUDGET_MS)"),
    ] = None,
) -> AsyncIterator[VariantCore]:
    """The core of the requested variant, held for the request (a load or unload waits for it).

    Raises:
        UnknownVariantError, VariantNotServedError (404), VariantNotReadyError,
        NoVariantLoadedError (auto) (503).
    """
    budget_s = (budget_ms if budget_ms is not None else settings.default_budget_ms) / 1000.0
    with lease_variant(pool, variant, budget_s=budget_s, record=record, metrics=metrics) as core:
        yield core


VariantDep = Annotated[VariantCore, Depends(get_variant)]


async def get_cores(
    pool: PoolDep,
    record: RecordDep,
    variants: Annotated[
        list[str] | None,
        Query(description="short or full variant names, repeated or comma-separated; default: every loaded variant"),
    ] = None,
) -> AsyncIterator[list[VariantCore]]:
    """The cores of the named variants (default: every loaded one), held for the request.

    Raises:
        UnknownVariantError, VariantNotServedError, VariantNotReadyError, NoVariantLoadedError.
    """
    names = [name.strip() for value in variants or () for name in value.split(",") if name.strip()]
    with pool.leases(names or None) as cores:
        # the access log's and metrics' label: the variants that ran, in registry order whatever the
        # order named, so that the label has at most 2^N - 1 values (15 for the bundled registry)
        ran = {core.variant for core in cores}
        record.variant = ",".join(variant for variant in pool.slots if variant in ran)
        yield cores


CoresDep = Annotated[list[VariantCore], Depends(get_cores)]
