"""GET /models, GET /models/{variant}: registry entries with published, measured and live state."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter
from pydantic import ValidationError

from model_zoo import UnknownVariantError

from ..deps import MeasuredDep, PoolDep
from ..errors import error_responses
from ..measured_figures import MeasuredFigures
from ..model_pool import VariantSlot
from ..schemas import MeasuredOut, ModelOut, ModelsResponse
from ..setup_help import missing_weights_hint

logger = logging.getLogger("attnzoo.models")

router = APIRouter(prefix="/models", tags=["models"], responses=error_responses(UnknownVariantError))


def model_summary(slot: VariantSlot, measured: MeasuredFigures) -> dict[str, Any]:
    entry, arch, core = slot.entry, slot.entry.arch, slot.core
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
        "device": core.device if core else None,
        "weights_file": str(slot.weights_path) if slot.weights_path else None,
        "weights_url": entry.weights_url,
        "sha256": core.sha256 if core else None,
        "load_seconds": core.load_seconds if core else None,
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
async def list_models(pool: PoolDep, measured: MeasuredDep) -> Any:
    return {
        "models": [model_summary(slot, measured) for slot in pool.slots.values()],
        "hint": missing_weights_hint(pool.requested_slots()),
    }


@router.get("/{variant}", response_model=ModelOut, summary="One variant (short or full name)")
async def get_model(variant: str, pool: PoolDep, measured: MeasuredDep) -> Any:
    return model_summary(pool.slot(variant), measured)
