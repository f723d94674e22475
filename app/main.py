"""The app factory: wires settings, the core, the front doors, middleware, error handlers and the lifespan.

``attnzoo serve`` runs ``uvicorn app.main:create_app --factory``. Nothing expensive happens at
import or in :func:`create_app` (it validates the settings and parses the registry); the
lifespan loads the models in a background thread, serves the Open Inference Protocol over gRPC
on the same event loop (``ATTNZOO_GRPC_PORT``), and stops both at shutdown.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, cast

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.middleware.cors import CORSMiddleware

from model_zoo import build_info, keep_freed_memory, load_registry

from .api import DOOR as API_DOOR
from .api.measured_figures import MeasuredFigures
from .api.routes import attention, compare, detect, docs, health, models, pages
from .core.metrics import METRICS_OPENAPI, METRICS_PATH, ServiceMetrics
from .core.pool import VariantPool
from .core.service import InferenceService
from .error_bodies import REQUEST_ID_HEADER, RETRY_AFTER_HEADER
from .error_table import install_error_handlers
from .oip import http as oip_http
from .oip.grpc_service import serving_grpc
from .server.access_log import AccessLog, configure_access_log
from .server.context import FrontDoors
from .server.head_admission import HeadAdmission
from .server.middleware import BodyLimitMiddleware, RequestContextMiddleware
from .settings import Settings, get_settings

logger = logging.getLogger("attnzoo.app")

DESCRIPTION = """Faster R-CNN R-50-FPN detectors with GeneralizedAttention ("An Empirical Study of
Spatial Attention Mechanisms in Deep Networks"): `POST /detect?variant=...` with an image (JSON, or
drawn with `format=image`), `POST /compare` (every loaded variant side by side), `POST /attention`
(one block's attention for a query point), `GET /models` for what is loaded, `/healthz`, `/readyz`,
`/metrics`, and a page to try it at `/`. The Open Inference Protocol (KServe v2) under `/v2`, and
over gRPC on `ATTNZOO_GRPC_PORT`, for Triton and KServe clients."""


class AttnzooAPI(FastAPI):
    """FastAPI, with the ``/metrics`` endpoint (prometheus-client's ASGI app) in the OpenAPI docs,
    and the hook its HTTP server calls at each request's head (``server.runner``)."""

    head_hook: HeadAdmission | None = None

    def openapi(self) -> dict[str, Any]:
        schema = super().openapi()  # built once, then cached by FastAPI
        schema["paths"].setdefault(METRICS_PATH, METRICS_OPENAPI)
        return schema


def create_app(settings: Settings | None = None) -> AttnzooAPI:
    """Build the service. ``settings`` default: :func:`get_settings` (the ``ATTNZOO_*`` environment).

    Raises:
        pydantic.ValidationError (bad settings), MetafileError, UnknownVariantError.
    """
    settings = settings if settings is not None else get_settings()
    registry = load_registry(settings.metafile)
    requested = registry.resolve_many(settings.variants)
    metrics = ServiceMetrics()
    service = InferenceService(settings, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.keep_freed_memory:
            kept = keep_freed_memory(settings.malloc_arenas)
            logger.info("malloc keeps freed memory (%s arenas): %s", settings.malloc_arenas or "default", "yes" if kept else "no (not glibc)")
        if settings.demo:
            logger.warning("demo mode (--demo): variants without their official weights serve synthetic stand-ins")
        service.start(VariantPool(registry, requested, settings, metrics))
        try:
            async with serving_grpc(service, settings, metrics):
                yield
        finally:
            await run_in_threadpool(service.stop)

    app = AttnzooAPI(
        title="attnzoo",
        description=DESCRIPTION,
        version=build_info().version,
        lifespan=lifespan,
        docs_url=None,  # routes.docs serves /docs and /redoc with local assets
        redoc_url=None,
        openapi_url="/openapi.json" if settings.docs else None,
    )
    app.state.settings = settings
    app.state.registry = registry
    app.state.metrics = metrics
    app.state.service = service
    app.state.measured = MeasuredFigures(settings.results_dir, registry)
    doors = FrontDoors([API_DOOR, oip_http.DOOR])
    install_error_handlers(app)
    configure_access_log()
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        timeout_s=settings.request_timeout_s,
        min_rate=settings.min_body_rate,
        grace_s=settings.min_body_rate_grace_s,
        doors=doors,
    )
    if settings.cors_origins:  # outside the body limit, so that browsers can read its 413 too
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["*"],
            expose_headers=[REQUEST_ID_HEADER, RETRY_AFTER_HEADER, oip_http.HEADER_LENGTH],
        )
    app.add_middleware(RequestContextMiddleware, metrics=metrics, doors=doors)  # outermost: sees every answer
    routers = [module.router for module in (detect, compare, attention, models, health, pages, oip_http)]
    for router in routers:
        app.include_router(router)
    # an ASGI app, which Starlette routes to as one (add_route's annotation names request handlers only)
    app.add_route(METRICS_PATH, cast(Any, metrics.endpoint()))
    app.mount("/static", pages.PageFiles(), name="static")
    if settings.docs:
        app.include_router(docs.router)
        app.mount(docs.ASSETS_PATH, docs.assets(), name="docs-assets")
    app.head_hook = HeadAdmission(service, [route for router in routers for route in router.routes], doors, AccessLog(metrics))
    return app
