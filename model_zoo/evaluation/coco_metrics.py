"""COCO bbox metrics with pycocotools' COCOeval, set up as mmdet's ``CocoMetric`` sets it up.

- categories: the annotation file's ids of the 80 COCO class names (``get_cat_ids(cat_names=…)``);
- images: the evaluated image ids;
- ``maxDets = [100, 300, 1000]`` (mmdet's ``proposal_nums``): AP uses pycocotools' default 100
  detections per image, AP50/AP75/APs/APm/APl use ``maxDets[2]``; our detectors emit at most
  100 per image, so both settings give the same numbers;
- IoU thresholds 0.50:0.05:0.95 (pycocotools' default).

Results are in mmdet's JSON format: ``{"image_id", "bbox": [x, y, w, h], "score", "category_id"}``
with ``w = x2 - x1`` and ``h = y2 - y1`` (no +1), floats not rounded.
"""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass
from typing import Any, Mapping, Protocol, Sequence

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from model_zoo.categories import COCO_CLASSES

MAX_DETS = (100, 300, 1000)
# Our field name → index in COCOeval.stats.
AP_FIELDS: dict[str, int] = {
    "box_ap": 0,
    "box_ap50": 1,
    "box_ap75": 2,
    "box_ap_s": 3,
    "box_ap_m": 4,
    "box_ap_l": 5,
}


class DetectionLike(Protocol):
    """What :func:`to_coco_result` reads (``model_zoo.detections.Detection`` has it)."""

    @property
    def bbox(self) -> tuple[float, float, float, float]: ...  # (x1, y1, x2, y2), original-image pixels

    @property
    def score(self) -> float: ...

    @property
    def category_id(self) -> int: ...


@dataclass(frozen=True)
class BboxMetrics:
    """AP figures in percent (``None`` where COCOeval reports -1: no ground truth in that
    range) and pycocotools' printed summary."""

    ap: dict[str, float | None]
    summary: str


def to_coco_result(image_id: int, detection: DetectionLike) -> dict[str, Any]:
    """One detection as a COCO results-JSON entry: bbox (x1, y1, x2, y2) → [x1, y1, x2-x1, y2-y1]."""
    x1, y1, x2, y2 = (float(v) for v in detection.bbox)
    return {
        "image_id": int(image_id),
        "bbox": [x1, y1, x2 - x1, y2 - y1],
        "score": float(detection.score),
        "category_id": int(detection.category_id),
    }


def load_ground_truth(annotation_file: str | os.PathLike[str]) -> COCO:
    """pycocotools' COCO object for an instances file, without its progress prints."""
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(annotation_file))


def evaluate_bbox(ground_truth: COCO, results: Sequence[Mapping[str, Any]], image_ids: Sequence[int]) -> BboxMetrics:
    """Run COCOeval (bbox) over ``image_ids`` with ``results`` as the detections.

    An empty ``results`` list scores 0 wherever there is ground truth (pycocotools' ``loadRes``
    cannot take an empty list, so the empty result set is built directly).
    """
    category_ids = ground_truth.getCatIds(catNms=list(COCO_CLASSES))
    with contextlib.redirect_stdout(io.StringIO()):
        detections = ground_truth.loadRes([dict(r) for r in results]) if results else _empty_results(ground_truth)
        evaluator = COCOeval(ground_truth, detections, "bbox")
        evaluator.params.catIds = category_ids
        evaluator.params.imgIds = list(image_ids)
        evaluator.params.maxDets = list(MAX_DETS)
        evaluator.evaluate()
        evaluator.accumulate()
    summary = io.StringIO()
    with contextlib.redirect_stdout(summary):
        evaluator.summarize()
    stats = np.asarray(evaluator.stats, dtype=np.float64)
    ap = {name: (None if stats[index] < 0 else float(stats[index]) * 100.0) for name, index in AP_FIELDS.items()}
    return BboxMetrics(ap=ap, summary=summary.getvalue())


def _empty_results(ground_truth: COCO) -> COCO:
    empty = COCO()
    empty.dataset = {
        "images": list(ground_truth.dataset.get("images", [])),
        "categories": list(ground_truth.dataset.get("categories", [])),
        "annotations": [],
    }
    empty.createIndex()
    return empty
