"""What every HTTP front door's routes may depend on, as ``Annotated`` aliases: the service, its
settings and metrics, and the request's context.

Every dependency is ``async def``, also those that do not await: FastAPI runs a plain ``def``
dependency in a worker thread, a thread hop per dependency per request for reading an attribute.
The app's objects are read from ``app.state`` (set by ``create_app``) rather than through
``app.dependency_overrides``: while any override is set, FastAPI re-analyses every dependency's
signature on every request.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from ..core.metrics import ServiceMetrics
from ..core.record import RequestRecord
from ..core.service import InferenceService
from ..settings import Settings
from .context import CONTEXT_KEY, RequestContext, context_of


async def get_service(request: Request) -> InferenceService:
    service: InferenceService = request.app.state.service
    return service


async def get_app_settings(request: Request) -> Settings:
    """The settings the app was built with (``create_app``)."""
    settings: Settings = request.app.state.settings
    return settings


async def get_metrics(request: Request) -> ServiceMetrics:
    metrics: ServiceMetrics = request.app.state.metrics
    return metrics


async def get_context(request: Request) -> RequestContext:
    """This request's context (made at its head, or by ``RequestContextMiddleware``)."""
    context = context_of(request.scope)
    if context is None:  # an app used without its middleware (never in the service)
        raise RuntimeError(f"request {request.url.path} has no context ({CONTEXT_KEY!r} in its state)")
    return context


async def get_record(context: Annotated[RequestContext, Depends(get_context)]) -> RequestRecord:
    return context.record


ServiceDep = Annotated[InferenceService, Depends(get_service)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
MetricsDep = Annotated[ServiceMetrics, Depends(get_metrics)]
ContextDep = Annotated[RequestContext, Depends(get_context)]
RecordDep = Annotated[RequestRecord, Depends(get_record)]
