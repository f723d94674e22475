"""What a detector answers for one image: typed detections, torch-free (drawing, the service's
answers and the evaluation read them without importing the engine)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable


@dataclass(frozen=True)
class Detection:
    """One detected object. ``bbox`` is (x1, y1, x2, y2) in original-image pixels."""

    bbox: tuple[float, float, float, float]
    score: float
    label: int  # contiguous 0..79
    category_id: int  # COCO category id
    class_name: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "bbox": list(self.bbox),
            "score": self.score,
            "label": self.label,
            "category_id": self.category_id,
            "class_name": self.class_name,
        }


@dataclass(frozen=True)
class DetectionResult:
    """Detections of one image, sorted by descending score; ``width``/``height`` in pixels."""

    width: int
    height: int
    detections: tuple[Detection, ...] = field(default_factory=tuple)

    def filter(
        self,
        score_thr: float | None = None,
        max_dets: int | None = None,
        labels: Iterable[int] | None = None,
    ) -> "DetectionResult":
        """Keep detections with ``score > score_thr`` (strict, as mmdet's test cfg) and label in
        ``labels``, at most ``max_dets``."""
        wanted = None if labels is None else set(labels)
        kept = [
            d
            for d in self.detections
            if (score_thr is None or d.score > score_thr) and (wanted is None or d.label in wanted)
        ]
        if max_dets is not None:
            kept = kept[:max_dets]
        return DetectionResult(self.width, self.height, tuple(kept))

    def to_dict(self) -> dict[str, Any]:
        return {"width": self.width, "height": self.height, "detections": [d.to_dict() for d in self.detections]}
