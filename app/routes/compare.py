"""POST /compare: one image through several variants, side by side (JSON, or a grid of drawn panels).

The image is decoded once; then each variant runs it in turn, through its own batcher, like a
``/detect`` request. One after the other, not all at once, so that each variant's measured latency
is its own and not a share of a contended CPU or GPU.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from typing import Any

import cv2
import numpy as np
from fastapi import APIRouter, Request, Response

from model_zoo import draw_detections, grid, titled

from ..deps import CoresDep, MetricsDep, SettingsDep
from ..disconnect import unless_disconnected
from ..errors import CLIENT_CLOSED, MODEL_ERRORS, UPLOAD_ERRORS, error_responses
from ..image_responses import FormatQuery, ResponseFormat, image_response, negotiate
from ..model_pool import NoVariantLoadedError
from ..schemas import CompareResponse
from ..upload import read_image_bytes
from ..variant_core import (
    DEFAULT_SCORE_THR,
    DetectOutcome,
    DetectParams,
    InvalidParameterError,
    VariantCore,
    decode_image,
    parse_classes,
)
from .image_request import IMAGE_ROUTE, VARY, ClassesQuery, MaxDetsQuery, ScoreThrQuery

GRID_COLUMNS = 2
MIN_PANEL_WIDTH = 360  # pixels; narrower drawings are enlarged so that their titles fit

router = APIRouter(
    prefix="/compare",
    tags=["compare"],
    responses=error_responses(*MODEL_ERRORS, *UPLOAD_ERRORS, InvalidParameterError, NoVariantLoadedError),
)


@router.post(
    "",
    response_model=CompareResponse,
    summary="Run one image through every loaded variant (or those named)",
    **IMAGE_ROUTE,
)
async def compare(
    request: Request,
    response: Response,
    cores: CoresDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    score_thr: ScoreThrQuery = DEFAULT_SCORE_THR,
    max_dets: MaxDetsQuery = None,
    classes: ClassesQuery = None,
    response_format: FormatQuery = None,
) -> Any:
    fmt = negotiate(response_format, request.headers.get("accept"))
    params = DetectParams(score_thr, max_dets, parse_classes(classes))
    outcomes: list[tuple[VariantCore, DetectOutcome]] = []
    with ExitStack() as held:
        # before reading the body: an overloaded variant refuses at once; else each holds a place
        admissions = [held.enter_context(core.admit(time.monotonic() + settings.request_timeout_s)) for core in cores]
        data = await read_image_bytes(request)
        started = time.perf_counter()
        image = await decode_image(data, max_pixels=settings.max_pixels)
        decode_s = time.perf_counter() - started
        for core, admission in zip(cores, admissions):
            deadline = time.monotonic() + settings.request_timeout_s  # each variant gets a /detect deadline
            with metrics.inflight.labels(core.variant).track_inprogress():
                outcome = await unless_disconnected(request, core.detect(image, params, deadline, admission))
            if outcome is None:
                return Response(status_code=CLIENT_CLOSED)
            metrics.observe_stages(core.variant, outcome.seconds)
            outcomes.append((core, outcome))
    if fmt is not ResponseFormat.JSON:
        return await image_response(lambda: comparison_image(image, outcomes), fmt, VARY)
    response.headers.update(VARY)
    height, width = image.shape[:2]
    return {"width": width, "height": height, "decode_ms": decode_s * 1000.0, "results": [_result(c, o) for c, o in outcomes]}


def latency_ms(outcome: DetectOutcome) -> float:
    return sum(outcome.seconds.values()) * 1000.0


def _result(core: VariantCore, outcome: DetectOutcome) -> dict[str, Any]:
    arch = core.entry.arch
    return {
        "variant": core.variant,
        "sha256": core.sha256,
        "weights_source": core.weights_source,
        "attention_type": arch.attention_type,
        "dcn": arch.with_dcn,
        "published_box_ap": core.entry.published.box_ap,
        "detections": outcome.result.detections,
        "timings_ms": {stage: seconds * 1000.0 for stage, seconds in outcome.seconds.items()},
        "latency_ms": latency_ms(outcome),
        "batch_size": outcome.batch_size,
    }


def comparison_image(image: np.ndarray, outcomes: list[tuple[VariantCore, DetectOutcome]]) -> np.ndarray:
    """A grid of panels, one per variant: its detections drawn, titled with the variant, then its
    published box AP and measured latency (two title bars, so that they fit a narrow image)."""
    panels = []
    for core, outcome in outcomes:
        panel = draw_detections(image, outcome.result.detections)
        if panel.shape[1] < MIN_PANEL_WIDTH:
            factor = MIN_PANEL_WIDTH / panel.shape[1]
            panel = cv2.resize(panel, None, fx=factor, fy=factor, interpolation=cv2.INTER_LINEAR)
        box_ap = core.entry.published.box_ap
        published = f"published AP {box_ap:.1f}" if box_ap is not None else "published AP n/a"
        panels.append(titled(titled(panel, f"{published} | {latency_ms(outcome):.0f} ms"), core.variant))
    return grid(panels, columns=GRID_COLUMNS)
