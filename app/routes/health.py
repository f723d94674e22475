"""GET /healthz (the process answers) and GET /readyz (every requested variant loaded and warm)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from ..deps import PoolDep
from ..errors import error_response
from ..model_pool import RETRY_AFTER_LOADING_S
from ..schemas import ErrorResponse, HealthResponse, ReadyResponse

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthResponse, summary="Liveness: the process is up")
async def healthz() -> Any:
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=ReadyResponse,
    summary="Readiness: every requested variant is loaded and warmed up",
    responses={503: {"model": ErrorResponse, "description": "not ready; `reasons` says why, per variant"}},
)
async def readyz(request: Request, pool: PoolDep) -> Any:
    reasons = pool.readiness()
    if reasons:
        detail = "; ".join(f"{variant}: {reason}" for variant, reason in reasons.items())
        return error_response(
            request, 503, "not_ready", detail, headers={"Retry-After": str(RETRY_AFTER_LOADING_S)}, reasons=reasons
        )
    return {"status": "ready", "variants": {slot.variant: slot.state.value for slot in pool.requested_slots()}}
