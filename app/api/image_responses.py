"""Image answers: which representation a request wants, and PNG/JPEG encoding of drawn images.

A route that can draw its answer takes ``format=`` (:data:`FormatQuery`) and calls
:func:`negotiate` with it and the ``Accept`` header:

- ``format=json`` → JSON; ``format=png`` / ``format=jpeg`` → that encoding;
- ``format=image`` → PNG, or JPEG when ``Accept`` ranks ``image/jpeg`` above ``image/png``;
- no ``format`` → whichever of JSON, PNG, JPEG the ``Accept`` header ranks highest (JSON on ties,
  and when it accepts none of them: a client that asks for nothing specific gets the JSON).

Errors stay JSON whatever was asked for. Drawing and encoding run in a worker thread.
"""

from __future__ import annotations

import enum
from typing import Annotated, Any, Callable, Literal

import cv2
import numpy as np
from fastapi import Query, Response
from starlette.concurrency import run_in_threadpool

JPEG_QUALITY = 90


class ResponseFormat(str, enum.Enum):
    JSON = "json"
    PNG = "png"
    JPEG = "jpeg"

    @property
    def media_type(self) -> str:
        return {"json": "application/json", "png": "image/png", "jpeg": "image/jpeg"}[self.value]


FormatQuery = Annotated[
    Literal["json", "image", "png", "jpeg"] | None,
    Query(
        alias="format",
        description="json, or image (PNG; JPEG when Accept prefers image/jpeg), png, jpeg; "
        "default: from the Accept header (image/png or image/jpeg), else json",
    ),
]

IMAGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "JSON, or the drawn image with format=image / Accept: image/png or image/jpeg",
        "content": {"image/png": {}, "image/jpeg": {}},
    }
}


def parse_accept(header: str | None) -> list[tuple[str, float]]:
    """``Accept`` header → [(media range, q)], e.g. ``"image/*;q=0.5"`` → ``[("image/*", 0.5)]``.

    Malformed q values count as 1; ranges are lower-cased.
    """
    ranges: list[tuple[str, float]] = []
    for part in (header or "").split(","):
        media_range, *params = (piece.strip() for piece in part.split(";"))
        if not media_range:
            continue
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = min(max(float(value), 0.0), 1.0)
                except ValueError:
                    quality = 1.0
        ranges.append((media_range.lower(), quality))
    return ranges


def quality_of(media_type: str, ranges: list[tuple[str, float]]) -> float:
    """q of ``media_type`` under the most specific matching range (exact > ``type/*`` > ``*/*``); 0 if none."""
    main_type = media_type.split("/", 1)[0]
    best: tuple[int, float] | None = None  # (specificity, q)
    for media_range, quality in ranges:
        if media_range == media_type:
            specificity = 2
        elif media_range == f"{main_type}/*":
            specificity = 1
        elif media_range == "*/*":
            specificity = 0
        else:
            continue
        if best is None or specificity > best[0]:
            best = (specificity, quality)
    return best[1] if best is not None else 0.0


def negotiate(requested: str | None, accept: str | None) -> ResponseFormat:
    """The representation of the answer: ``requested`` is the ``format`` parameter (see the module doc)."""
    if requested is not None and requested != "image":
        return ResponseFormat(requested)
    ranges = parse_accept(accept)
    offered = [ResponseFormat.PNG, ResponseFormat.JPEG]
    if requested is None:
        offered.insert(0, ResponseFormat.JSON)
    # max() keeps the first of equal qualities: JSON before PNG before JPEG
    best = max(offered, key=lambda fmt: quality_of(fmt.media_type, ranges))
    return best if quality_of(best.media_type, ranges) > 0 else offered[0]


def encode_image(image: np.ndarray, fmt: ResponseFormat) -> bytes:
    """(H, W, 3) BGR uint8 → PNG or JPEG (quality :data:`JPEG_QUALITY`) bytes."""
    if fmt is ResponseFormat.PNG:
        ok, data = cv2.imencode(".png", image)
    elif fmt is ResponseFormat.JPEG:
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    else:
        raise ValueError(f"{fmt.value} is not an image format")
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {image.shape} image as {fmt.value}")
    return data.tobytes()


async def image_response(draw: Callable[[], np.ndarray], fmt: ResponseFormat, headers: dict[str, str] | None = None) -> Response:
    """Run ``draw`` (returns a BGR image) and encode its image in a worker thread; the response."""
    content = await run_in_threadpool(lambda: encode_image(draw(), fmt))
    return Response(content, media_type=fmt.media_type, headers=headers)
