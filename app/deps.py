"""Shared dependencies as ``Annotated`` aliases: the routes' only way to reach the app's state.

:data:`VariantDep` resolves the ``variant`` query parameter once per request: an unknown name, or
one this process was not started with, is a 404 and a variant that cannot answer now a 503, all
raised here; the variant is recorded for
the access log, and the route gets the variant's :class:`~app.variant_core.VariantCore`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request

from .errors import ServiceNotStartedError
from .measured_figures import MeasuredFigures
from .metrics import ServiceMetrics
from .middleware import RequestRecord, record_of
from .model_pool import ModelPool
from .settings import Settings, get_settings
from .variant_core import VariantCore


def get_pool(request: Request) -> ModelPool:
    pool = getattr(request.app.state, "pool", None)
    if pool is None:
        raise ServiceNotStartedError("the service has not started (its lifespan is not running)")
    return pool


def get_metrics(request: Request) -> ServiceMetrics:
    return request.app.state.metrics


def get_measured(request: Request) -> MeasuredFigures:
    return request.app.state.measured


def get_record(request: Request) -> RequestRecord:
    """This request's access-log record (made by ``RequestContextMiddleware``)."""
    record = record_of(request.scope)
    if record is None:  # an app used without its middleware (never in the service)
        record = request.scope.setdefault("state", {})["record"] = RequestRecord(request_id="")
    return record


SettingsDep = Annotated[Settings, Depends(get_settings)]
PoolDep = Annotated[ModelPool, Depends(get_pool)]
MetricsDep = Annotated[ServiceMetrics, Depends(get_metrics)]
MeasuredDep = Annotated[MeasuredFigures, Depends(get_measured)]
RecordDep = Annotated[RequestRecord, Depends(get_record)]


def get_variant(
    variant: Annotated[str, Query(description="short or full variant name, e.g. attn1111-dcn")],
    pool: PoolDep,
    record: RecordDep,
) -> VariantCore:
    """The core of the requested variant.

    Raises:
        UnknownVariantError, VariantNotServedError (404), VariantNotReadyError (503).
    """
    slot = pool.slot(variant)
    record.variant = slot.variant
    return pool.core(slot.variant)


VariantDep = Annotated[VariantCore, Depends(get_variant)]
