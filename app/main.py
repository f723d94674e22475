"""The app factory: wires settings, routers, middleware, error handlers and the lifespan.

``attnzoo serve`` runs ``uvicorn app.main:create_app --factory``. Nothing expensive happens at
import or in :func:`create_app` (it validates the settings and parses the registry); the
lifespan loads the models in a background thread and stops the batchers at shutdown.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from typing import AsyncIterator

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from model_zoo import keep_freed_memory, load_registry

from .errors import install_error_handlers
from .measured import MeasuredFigures
from .metrics import ServiceMetrics
from .middleware import BodyLimitMiddleware, RequestContextMiddleware, configure_access_log
from .model_pool import ModelPool, resolve_variants
from .routes import attention, compare, detect, health, metrics, models, pages
from .settings import Settings, get_settings

logger = logging.getLogger("attnzoo.app")

DESCRIPTION = """Faster R-CNN R-50-FPN detectors with GeneralizedAttention ("An Empirical Study of
Spatial Attention Mechanisms in Deep Networks"): `POST /detect?variant=...` with an image (JSON, or
drawn with `format=image`), `POST /compare` (every loaded variant side by side), `POST /attention`
(one block's attention for a query point), `GET /models` for what is loaded, `/healthz`, `/readyz`,
`/metrics`, and a page to try it at `/`."""


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the service. ``settings`` default: :func:`get_settings` (the ``ATTNZOO_*`` environment).

    Raises:
        pydantic.ValidationError (bad settings), MetafileError, UnknownVariantError.
    """
    settings = settings if settings is not None else get_settings()
    registry = load_registry(settings.metafile)
    requested = resolve_variants(registry, settings.variants)
    service_metrics = ServiceMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.keep_freed_memory:
            kept = keep_freed_memory(settings.malloc_arenas)
            logger.info("malloc keeps freed memory (%s arenas): %s", settings.malloc_arenas or "default", "yes" if kept else "no (not glibc)")
        pool = ModelPool(registry, requested, settings, service_metrics)
        app.state.pool = pool
        pool.start()
        try:
            yield
        finally:
            await run_in_threadpool(pool.close)
            app.state.pool = None

    app = FastAPI(
        title="attnzoo",
        description=DESCRIPTION,
        version="0.1.0",
        lifespan=lifespan,
        docs_url="/docs" if settings.docs else None,
        redoc_url="/redoc" if settings.docs else None,
        openapi_url="/openapi.json" if settings.docs else None,
    )
    app.state.settings = settings
    app.state.registry = registry
    app.state.metrics = service_metrics
    app.state.measured = MeasuredFigures(settings.results_dir, registry)
    app.state.pool = None
    app.dependency_overrides[get_settings] = lambda: settings
    install_error_handlers(app)
    configure_access_log()
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes, timeout_s=settings.request_timeout_s)
    app.add_middleware(RequestContextMiddleware, metrics=service_metrics)  # outermost: sees every answer
    for module in (detect, compare, attention, models, health, metrics, pages):
        app.include_router(module.router)
    return app
