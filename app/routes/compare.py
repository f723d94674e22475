"""POST /compare: one image through several variants, side by side (JSON, or a grid of drawn panels).

The image is decoded once; then each variant runs it in turn, through its own batcher, like a
``/detect`` request. One after the other, not all at once, so that each variant's measured latency
is its own and not a share of a contended CPU or GPU.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import cv2
import numpy as np
from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from model_zoo import draw_detections, grid, titled

from ..decode import decode_upload
from ..deps import MetricsDep, PoolDep, SettingsDep
from ..middleware import CLIENT_CLOSED
from ..model_pool import ModelSlot
from ..pipeline import DetectOutcome, DetectParams, parse_classes, run_detection
from ..render import IMAGE_RESPONSES, FormatQuery, ResponseFormat, image_response, negotiate
from ..schemas import CompareResponse, ErrorResponse
from ..upload import read_image_bytes
from .detect import DEFAULT_SCORE_THR, REQUEST_BODY, VARY, ClassesQuery, MaxDetsQuery, ScoreThrQuery, client_gone

GRID_COLUMNS = 2
MIN_PANEL_WIDTH = 360  # pixels; narrower drawings are enlarged so that their titles fit

router = APIRouter(
    prefix="/compare",
    tags=["compare"],
    responses={
        status: {"model": ErrorResponse, "description": description}
        for status, description in {
            400: "empty body",
            404: "unknown variant in `variants` (the body lists the valid ones)",
            413: "body or image too large",
            415: "unsupported Content-Type or image format",
            422: "invalid image or parameter",
            429: "a variant's queue is full (see Retry-After)",
            503: "a named variant, or every variant, is not loaded (see Retry-After)",
            504: "deadline passed before a variant's model answered",
        }.items()
    },
)


def split_names(values: list[str] | None) -> list[str] | None:
    """``["a,b", "c"]`` → ``["a", "b", "c"]``; nothing → None (every loaded variant)."""
    names = [name.strip() for value in values or () for name in value.split(",") if name.strip()]
    return names or None


@router.post(
    "",
    response_model=CompareResponse,
    summary="Run one image through every loaded variant (or those named)",
    openapi_extra={"requestBody": REQUEST_BODY},
    responses=IMAGE_RESPONSES,
)
async def compare(
    request: Request,
    response: Response,
    pool: PoolDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    variants: Annotated[
        list[str] | None,
        Query(description="short or full variant names, repeated or comma-separated; default: every loaded variant"),
    ] = None,
    score_thr: ScoreThrQuery = DEFAULT_SCORE_THR,
    max_dets: MaxDetsQuery = None,
    classes: ClassesQuery = None,
    response_format: FormatQuery = None,
) -> Any:
    fmt = negotiate(response_format, request.headers.get("accept"))
    slots = pool.loaded_slots(split_names(variants))
    params = DetectParams(score_thr, max_dets, parse_classes(classes))
    data = await read_image_bytes(request)
    started = time.perf_counter()
    image = (await run_in_threadpool(decode_upload, data, max_pixels=settings.max_pixels)).pixels
    decode_s = time.perf_counter() - started
    outcomes: list[tuple[ModelSlot, DetectOutcome]] = []
    for slot in slots:
        with metrics.inflight.labels(slot.variant).track_inprogress():
            outcome = await run_detection(
                slot.detector,  # type: ignore[arg-type]
                slot.batcher,  # type: ignore[arg-type]
                image,
                params,
                deadline=time.monotonic() + settings.request_timeout_s,  # each variant gets a /detect deadline
                max_pixels=settings.max_pixels,
                disconnected=lambda: client_gone(request),
            )
        if outcome is None:
            return Response(status_code=CLIENT_CLOSED)
        metrics.observe_stages(slot.variant, outcome.seconds)
        outcomes.append((slot, outcome))
    if fmt is not ResponseFormat.JSON:
        return await image_response(lambda: comparison_image(image, outcomes), fmt, VARY)
    response.headers.update(VARY)
    height, width = image.shape[:2]
    return {"width": width, "height": height, "decode_ms": decode_s * 1000.0, "results": [_result(s, o) for s, o in outcomes]}


def latency_ms(outcome: DetectOutcome) -> float:
    return sum(outcome.seconds.values()) * 1000.0


def _result(slot: ModelSlot, outcome: DetectOutcome) -> dict[str, Any]:
    arch = slot.entry.arch
    return {
        "variant": slot.variant,
        "sha256": slot.sha256,
        "attention_type": arch.attention_type,
        "dcn": arch.with_dcn,
        "published_box_ap": slot.entry.published.box_ap,
        "detections": outcome.detections,
        "timings_ms": {stage: seconds * 1000.0 for stage, seconds in outcome.seconds.items()},
        "latency_ms": latency_ms(outcome),
        "batch_size": outcome.batch_size,
    }


def comparison_image(image: np.ndarray, outcomes: list[tuple[ModelSlot, DetectOutcome]]) -> np.ndarray:
    """A grid of panels, one per variant: its detections drawn, titled with the variant, then its
    published box AP and measured latency (two title bars, so that they fit a narrow image)."""
    panels = []
    for slot, outcome in outcomes:
        panel = draw_detections(image, outcome.result.detections)
        if panel.shape[1] < MIN_PANEL_WIDTH:
            factor = MIN_PANEL_WIDTH / panel.shape[1]
            panel = cv2.resize(panel, None, fx=factor, fy=factor, interpolation=cv2.INTER_LINEAR)
        box_ap = slot.entry.published.box_ap
        published = f"published AP {box_ap:.1f}" if box_ap is not None else "published AP n/a"
        panels.append(titled(titled(panel, f"{published} | {latency_ms(outcome):.0f} ms"), slot.variant))
    return grid(panels, columns=GRID_COLUMNS)
