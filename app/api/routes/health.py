"""GET /healthz (the process answers) and GET /readyz (the variants answer).

``/readyz`` follows Triton's ``--strict-readiness``: with ``ATTNZOO_STRICT_READINESS`` true (the
default) it is 200 when every requested variant is loaded and warm, with false when at least one
is; 503 otherwise. Either way its body lists each requested variant's state, why the others do not
answer, and, for a variant whose checkpoint is missing, where to put which file.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from model_zoo import build_info

from ...core.errors import RETRY_AFTER_LOADING_S
from ...core.pool import VariantPool
from ...error_table import error_response
from ...server.dependencies import ServiceDep, SettingsDep
from ..schemas import ErrorResponse, HealthResponse, ReadyResponse
from ..setup_help import missing_weights_hint

router = APIRouter(tags=["health"])


def build() -> dict[str, str | None]:
    """Which build answers: ``model_zoo.build_info()`` (read once per process)."""
    info = build_info()
    return {"version": info.version, "commit": info.revision}


@router.get("/healthz", response_model=HealthResponse, summary="Liveness: the process is up (and which build it runs)")
async def healthz() -> Any:
    return {"status": "ok", "build": build()}


def readiness_report(pool: VariantPool, *, strict: bool) -> dict[str, Any]:
    """The body fields /readyz has whether it is ready or not."""
    slots = pool.requested_slots()
    return {
        "strict": strict,
        "variants": {slot.variant: slot.state.value for slot in slots},
        "reasons": pool.readiness(),
        "missing_weights": {slot.variant: slot.missing_weights.to_dict() for slot in slots if slot.missing_weights},
        "hint": missing_weights_hint(slots),
    }


@router.get(
    "/readyz",
    response_model=ReadyResponse,
    summary="Readiness: every requested variant is loaded (ATTNZOO_STRICT_READINESS=false: at least one)",
    responses={503: {"model": ErrorResponse, "description": "not ready; the body has the fields of the 200 too"}},
)
async def readyz(request: Request, service: ServiceDep, settings: SettingsDep) -> Any:
    pool = service.pool
    strict = settings.strict_readiness
    report = readiness_report(pool, strict=strict)
    if pool.is_ready(strict=strict):
        return {"status": "ready", **report}
    detail = "; ".join(f"{variant}: {reason}" for variant, reason in report["reasons"].items()) or "no variant requested"
    return error_response(request, 503, "not_ready", detail, headers={"Retry-After": str(RETRY_AFTER_LOADING_S)}, **report)
