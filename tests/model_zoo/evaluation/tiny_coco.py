"""A tiny COCO val2017 look-alike, written to disk for the evaluation tests (and the README test).

Six real JPEG images drawn with OpenCV, listed in a deliberately unsorted id order, and
hand-made instance annotations in the real file's schema. The first three images hold three
objects each of ``person`` (1), ``car`` (3) and ``dog`` (18): one small (area < 32²), one
medium and one large (area > 96²) per category over the three images, so every AP figure
(AP, AP50, AP75, APs, APm, APl) has ground truth. The last three images hold no object.
(A module of its own, not conftest.py, so that tests elsewhere can import it by a unique name.)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from model_zoo.categories import COCO_CATEGORY_IDS, COCO_CLASSES

PERSON, CAR, DOG = 1, 3, 18


@dataclass(frozen=True)
class Box:
    category_id: int
    x: int
    y: int
    w: int
    h: int

    @property
    def xywh(self) -> list[float]:
        return [float(self.x), float(self.y), float(self.w), float(self.h)]


@dataclass(frozen=True)
class Scene:
    image_id: int
    width: int
    height: int
    boxes: tuple[Box, ...]

    @property
    def file_name(self) -> str:
        return f"{self.image_id:012d}.jpg"


SCENES: tuple[Scene, ...] = (
    Scene(632, 200, 150, (Box(PERSON, 10, 20, 110, 100), Box(CAR, 140, 30, 48, 40), Box(DOG, 150, 110, 20, 20))),
    Scene(139, 160, 120, (Box(PERSON, 20, 30, 40, 50), Box(CAR, 100, 10, 24, 16), Box(DOG, 90, 60, 50, 40))),
    Scene(885, 240, 160, (Box(PERSON, 210, 20, 16, 30), Box(CAR, 10, 10, 120, 90), Box(DOG, 130, 50, 100, 100))),
    Scene(285, 180, 140, ()),
    Scene(724, 150, 150, ()),
    Scene(776, 210, 130, ()),
)

_COLORS = {PERSON: (40, 40, 220), CAR: (220, 120, 30), DOG: (40, 200, 60)}


def draw_scene(scene: Scene) -> np.ndarray:
    """BGR uint8 (H, W, 3): a gradient background with one filled shape per box."""
    rows = np.linspace(60, 180, scene.height, dtype=np.float32)[:, None]
    cols = np.linspace(0, 50, scene.width, dtype=np.float32)[None, :]
    gray = (rows + cols).astype(np.uint8)
    image = np.dstack([gray, gray, gray])
    for box in scene.boxes:
        top_left, bottom_right = (box.x, box.y), (box.x + box.w - 1, box.y + box.h - 1)
        if box.category_id == DOG:
            center = (box.x + box.w // 2, box.y + box.h // 2)
            cv2.ellipse(image, center, (box.w // 2, box.h // 2), 0, 0, 360, _COLORS[DOG], -1)
        else:
            cv2.rectangle(image, top_left, bottom_right, _COLORS[box.category_id], -1)
    return image


def annotation_document(scenes: tuple[Scene, ...] = SCENES) -> dict:
    """An instances_val2017.json-style document for ``scenes`` (all 80 categories listed)."""
    images, annotations = [], []
    for scene in scenes:
        images.append(
            {"id": scene.image_id, "file_name": scene.file_name, "width": scene.width, "height": scene.height}
        )
        for box in scene.boxes:
            x1, y1, x2, y2 = box.x, box.y, box.x + box.w, box.y + box.h
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": scene.image_id,
                    "category_id": box.category_id,
                    "bbox": box.xywh,
                    "area": float(box.w * box.h),
                    "iscrowd": 0,
                    "segmentation": [[x1, y1, x2, y1, x2, y2, x1, y2]],
                }
            )
    categories = [
        {"id": cid, "name": name, "supercategory": "thing"} for cid, name in zip(COCO_CATEGORY_IDS, COCO_CLASSES)
    ]
    return {
        "info": {"description": "attnzoo test set"},
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }


def write_coco_root(root: Path, scenes: tuple[Scene, ...] = SCENES) -> Path:
    """Write ``root/annotations/instances_val2017.json`` and ``root/val2017/*.jpg``."""
    (root / "annotations").mkdir(parents=True)
    (root / "val2017").mkdir()
    for scene in scenes:
        ok = cv2.imwrite(str(root / "val2017" / scene.file_name), draw_scene(scene), [cv2.IMWRITE_JPEG_QUALITY, 95])
        assert ok
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(annotation_document(scenes)))
    return root


def ground_truth_results(scenes: tuple[Scene, ...] = SCENES, score: float = 1.0) -> list[dict]:
    """Every ground-truth box as a COCO results entry."""
    return [
        {"image_id": scene.image_id, "bbox": box.xywh, "score": score, "category_id": box.category_id}
        for scene in scenes
        for box in scene.boxes
    ]


@dataclass(frozen=True)
class TinyCoco:
    """The tiny set on disk plus what the tests need to know about it."""

    root: Path
    scenes: tuple[Scene, ...] = SCENES

    @property
    def annotation_file(self) -> Path:
        return self.root / "annotations" / "instances_val2017.json"

    @property
    def image_ids(self) -> list[int]:
        return [scene.image_id for scene in self.scenes]

    def scene(self, image_id: int) -> Scene:
        return next(scene for scene in self.scenes if scene.image_id == image_id)

    def ground_truth_results(self, score: float = 1.0) -> list[dict]:
        return ground_truth_results(self.scenes, score)
