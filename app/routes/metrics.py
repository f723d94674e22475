"""GET /metrics: Prometheus exposition of the service's own registry."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from ..deps import MetricsDep
from ..metrics import CONTENT_TYPE

router = APIRouter(tags=["metrics"])


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request, metrics: MetricsDep) -> Response:
    pool = getattr(request.app.state, "pool", None)
    devices = pool.cuda_devices() if pool is not None else []
    body = await run_in_threadpool(metrics.render, devices)
    return Response(body, media_type=CONTENT_TYPE)
