"""Model control (load or unload a variant at run time), as every front door offers it: the
HTTP API's ``/models/{variant}/load|unload`` and the v2 repository API over HTTP and gRPC.

The guard, :func:`require_admin`: ``Authorization: Bearer <ATTNZOO_ADMIN_TOKEN>``. No token
configured: every control request is refused (403), so a service is never controllable by
accident. A missing or wrong token: 401. The comparison takes the same time whatever the given
token is (``secrets.compare_digest``). The action, :func:`control`: run in a worker thread, one
at a time (409 while another runs), logged and counted (``attnzoo_model_control_total``).
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import Annotated, Literal

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from ..core.errors import ControlBusyError, ModelControlDisabledError, NotAuthorizedError, WeightsRefusedError
from ..core.metrics import ServiceMetrics
from ..core.pool import VariantSlot
from ..core.record import RequestRecord
from ..core.service import InferenceService
from ..error_table import spec_for
from .dependencies import SettingsDep

logger = logging.getLogger("attnzoo.control")
Action = Literal["load", "unload"]

# auto_error=False: a missing token is answered by the service's own 401 (JSON body,
# WWW-Authenticate), not FastAPI's 403; the scheme still shows in OpenAPI ("Authorize" on /docs).
bearer_token = HTTPBearer(auto_error=False, scheme_name="adminToken", description="ATTNZOO_ADMIN_TOKEN")


async def require_admin(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_token)],
) -> None:
    """Raises ModelControlDisabledError (403) or NotAuthorizedError (401) unless the token matches."""
    if settings.admin_token is None:
        raise ModelControlDisabledError("model control is off: start the service with ATTNZOO_ADMIN_TOKEN set")
    given = credentials.credentials.strip() if credentials is not None else ""
    expected = settings.admin_token.get_secret_value()
    if not given or not secrets.compare_digest(given.encode(), expected.encode()):
        raise NotAuthorizedError("send the admin token as 'Authorization: Bearer <ATTNZOO_ADMIN_TOKEN>'")


# What a control request can answer, besides an unknown variant (the OpenAPI ``responses``).
CONTROL_ERRORS = (NotAuthorizedError, ModelControlDisabledError, ControlBusyError, WeightsRefusedError)


async def control(action: Action, name: str, service: InferenceService, metrics: ServiceMetrics, record: RequestRecord) -> VariantSlot:
    """(Re)load or unload the variant ``name`` (``VariantPool.load`` / ``unload``) in a worker
    thread; log and count the outcome. Its slot afterwards.

    Raises:
        UnknownVariantError (not counted under a label), ControlBusyError, WeightsRefusedError.
    """
    pool = service.pool
    variant = pool.slot(name).variant
    record.variant = variant
    started = time.perf_counter()
    try:
        slot = await run_in_threadpool(pool.load if action == "load" else pool.unload, variant)
    except Exception as exc:
        spec = spec_for(exc)
        metrics.model_control.labels(variant, action, spec.code if spec else "internal_error").inc()
        logger.warning("model control: %s %s refused: %s", action, variant, exc)
        raise
    metrics.model_control.labels(variant, action, "ok").inc()
    done = f"sha256 {slot.served.sha256}" if slot.served is not None else "unloaded"
    logger.info("model control: %s %s done in %.2f s (%s)", action, variant, time.perf_counter() - started, done)
    return slot
