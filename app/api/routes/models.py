"""GET /models, GET /models/{variant}: registry entries with published, measured and live state;
POST /models/{variant}/load and /unload: change what the service serves without a restart.

``load`` (re)reads the variant's weights from the weights dir, verified as at start, warms the
model up and swaps it in: requests already running finish on the old model, new ones go to the
new one. Weights that fail verification leave the old model serving (422, with the reason).
``unload`` stops serving the variant and frees its memory once its last request is done. Both
need ``Authorization: Bearer <ATTNZOO_ADMIN_TOKEN>`` (``server/model_control.py``), run one at a time (409
while another runs), and are logged and counted (``attnzoo_model_control_total``).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Depends
from pydantic import ValidationError

from model_zoo import UnknownVariantError

from ...core.pool import VariantSlot
from ...error_table import error_responses
from ...server.dependencies import MetricsDep, RecordDep, ServiceDep
from ...server.model_control import CONTROL_ERRORS, control, require_admin
from ..deps import MeasuredDep
from ..measured_figures import MeasuredFigures
from ..schemas import MeasuredOut, ModelOut, ModelsResponse
from ..setup_help import missing_weights_hint
from .health import build

logger = logging.getLogger("attnzoo.models")

router = APIRouter(prefix="/models", tags=["models"], responses=error_responses(UnknownVariantError))


def model_summary(slot: VariantSlot, measured: MeasuredFigures) -> dict[str, Any]:
    entry, arch, served = slot.entry, slot.entry.arch, slot.served
    published = entry.published
    attention = arch.backbone.attention
    return {
        "variant": entry.alias,
        "name": entry.name,
        "collection": entry.collection,
        "architecture": {
            "config": entry.config,
            "backbone": f"ResNet-{arch.backbone.depth}",
            "attention_type": arch.attention_type,
            "attention_stages": list(attention.stages) if attention else [],
            "dcn": arch.with_dcn,
            "dcn_stages": list(arch.backbone.dcn_stages),
        },
        "published": {
            "box_ap": published.box_ap,
            "fps": published.fps,
            "inference_ms": published.inference_ms,
            "train_memory_gb": published.train_memory_gb,
            "hardware": published.hardware,
            "backend": published.backend,
            "batch_size": published.batch_size,
            "mode": published.mode,
            "resolution": published.resolution,
            "training_resources": entry.training_resources,
        },
        "measured": _measured(entry.alias, measured),
        "state": slot.state.value,
        "ready": slot.ready,
        "requested": slot.requested,
        "reason": slot.reason,
        "missing_weights": slot.missing_weights.to_dict() if slot.missing_weights else None,
        "device": served.device if served else None,
        "weights_file": slot.weights_file,
        "weights_url": entry.weights_url,
        "sha256": served.sha256 if served else None,
        "weights_source": served.weights_source if served else None,
        "load_seconds": served.load_seconds if served else None,
    }


def _measured(variant: str, measured: MeasuredFigures) -> dict[str, Any] | None:
    row = measured.get(variant)
    if row is None:
        return None
    try:
        return MeasuredOut.model_validate(row).model_dump()
    except ValidationError as exc:
        logger.warning("ignoring measured figures of %s in %s: %s", variant, row.get("source"), exc)
        return None


@router.get("", response_model=ModelsResponse, summary="Every registry variant")
async def list_models(service: ServiceDep, measured: MeasuredDep) -> Any:
    pool = service.pool
    return {
        "models": [model_summary(slot, measured) for slot in pool.slots.values()],
        "hint": missing_weights_hint(pool.requested_slots()),
        "build": build(),
    }


@router.get("/{variant}", response_model=ModelOut, summary="One variant (short or full name)")
async def get_model(variant: str, service: ServiceDep, measured: MeasuredDep) -> Any:
    return model_summary(service.pool.slot(variant), measured)


# Two routes that differ only in the action they run (duplicates lists them as alike): each path
# stays a documented operation of its own in the OpenAPI document.
@router.post(
    "/{variant}/load",
    response_model=ModelOut,
    summary="Load (or reload) a variant's weights from disk and serve them",
    dependencies=[Depends(require_admin)],
    responses=error_responses(*CONTROL_ERRORS),
)
async def load_model(variant: str, service: ServiceDep, measured: MeasuredDep, metrics: MetricsDep, record: RecordDep) -> Any:
    return model_summary(await control("load", variant, service, metrics, record), measured)


@router.post(
    "/{variant}/unload",
    response_model=ModelOut,
    summary="Stop serving a variant and free its memory",
    dependencies=[Depends(require_admin)],
    responses=error_responses(*CONTROL_ERRORS),
)
async def unload_model(variant: str, service: ServiceDep, measured: MeasuredDep, metrics: MetricsDep, record: RecordDep) -> Any:
    return model_summary(await control("unload", variant, service, metrics, record), measured)
