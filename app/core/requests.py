"""The typed requests and outcomes of the core, whichever protocol carried them.

A front door parses its wire format into a :class:`DetectRequest` (images + :class:`DetectParams`)
and renders the :class:`DetectOutcome` it gets back; it never sees the batcher or the detector.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
from numpy.typing import NDArray

from model_zoo import COCO_CATEGORY_IDS, COCO_CLASSES, LABEL_BY_CATEGORY_ID, LABEL_BY_NAME, AttentionMap, DetectionResult, WeightsSource

from .errors import InvalidParameterError

DEFAULT_SCORE_THR = 0.3  # the service's default filter (the test config's own threshold is 0.05)

ImageData = bytes | NDArray[np.uint8]  # an encoded image, or one already decoded: (H, W, 3) BGR uint8


@dataclass(frozen=True)
class DetectParams:
    """What a request asks for: ``score > score_thr``, at most ``max_dets``, labels in ``labels``."""

    score_thr: float = DEFAULT_SCORE_THR
    max_dets: int | None = None
    labels: frozenset[int] | None = None  # contiguous labels 0..79; None: every class


@dataclass(frozen=True)
class DetectRequest:
    """Images to run through one variant, each filtered by ``params``."""

    images: Sequence[ImageData]
    params: DetectParams


@dataclass(frozen=True)
class ImageDetections:
    """One image's answer: its detections after the request's filters, and how time was spent."""

    result: DetectionResult  # width/height of the original image, detections by descending score
    image: NDArray[np.uint8]  # (H, W, 3) BGR uint8: the decoded original the detections refer to
    seconds: dict[str, float]  # stage → seconds, keys = metrics.STAGES
    batch_size: int  # images that shared the model call

    @property
    def latency_s(self) -> float:
        return sum(self.seconds.values())


@dataclass(frozen=True)
class DetectOutcome:
    """A request's answer: which variant gave it (its weights), and each image's detections."""

    variant: str
    sha256: str | None
    weights_source: WeightsSource
    images: list[ImageDetections]

    @property
    def batch_size(self) -> int:
        """The largest batch any of its images shared."""
        return max(image.batch_size for image in self.images)


@dataclass(frozen=True)
class AttentionQuery:
    """One block's attention for the query point (x, y), in original-image pixels."""

    stage: int
    block: int
    x: float
    y: float


@dataclass(frozen=True)
class AttentionOutcome:
    attention: AttentionMap
    image: NDArray[np.uint8]  # (H, W, 3) BGR uint8
    seconds: dict[str, float]  # "preprocess" (decoding) and "model" (the forward that computed it)


def parse_classes(values: Iterable[str] | None) -> frozenset[int] | None:
    """Class names (``person``) or COCO category ids (``1``), repeated or comma-separated → labels.

    Raises:
        InvalidParameterError: naming the unknown value and the valid names and ids.
    """
    if values is None:
        return None
    labels: set[int] = set()
    for value in values:
        for token in (t.strip() for t in value.split(",")):
            if not token:
                continue
            if not token.isascii():  # names and ids are ASCII; so no Unicode case folding or digits
                label = None
            else:
                label = LABEL_BY_CATEGORY_ID.get(int(token)) if token.isdigit() else LABEL_BY_NAME.get(token.lower())
            if label is None:
                raise InvalidParameterError(
                    f"unknown class {token!r} in 'classes'; valid: COCO class names ({', '.join(COCO_CLASSES)}) "
                    f"or COCO category ids ({', '.join(map(str, COCO_CATEGORY_IDS))})"
                )
            labels.add(label)
    return frozenset(labels) if labels else None
