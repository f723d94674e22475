"""Drawing: detections on an image, attention heat maps, and titled panels in a grid.

Images are BGR uint8 (H, W, 3) arrays, as OpenCV and the engine use them. Everything is drawn
with OpenCV's built-in Hershey font: no font files, nothing fetched at run time.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from model_zoo.detections import Detection

FONT = cv2.FONT_HERSHEY_SIMPLEX
GOLDEN_RATIO = 0.618033988749895


def class_color(label: int) -> tuple[int, int, int]:
    """A stable, well-separated BGR colour per class label (golden-ratio hue steps)."""
    hue = (label * GOLDEN_RATIO) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return int(b * 255), int(g * 255), int(r * 255)


def line_width(image: np.ndarray) -> int:
    """Box line width in pixels: about 0.2% of the image's height + width, at least 1."""
    return max(1, round(0.002 * (image.shape[0] + image.shape[1])))


MIN_TEXT_SCALE = 0.3  # Hershey simplex 0.3: text 7 px tall, about the smallest that stays readable
TEXT_SCALE_PER_PIXEL = 0.0009  # of sqrt(height × width): text about 2% of the image's mean side tall
LABEL_PAD = 1  # pixels between the text and the edge of its filled box


def text_scale(image: np.ndarray) -> float:
    """Label font scale: in proportion to the image's size (the geometric mean of its sides), so a
    label takes the same share of a small image as of a large one, but at least MIN_TEXT_SCALE."""
    height, width = image.shape[:2]
    return max(MIN_TEXT_SCALE, TEXT_SCALE_PER_PIXEL * float(np.sqrt(height * width)))


@dataclass(frozen=True)
class LabelPlacement:
    """Where one detection's label goes: the filled box's top-left corner and size, in pixels."""

    index: int  # of the detection, in the order given to :func:`place_labels`
    text: str
    x: int
    y: int
    width: int
    height: int

    def overlaps(self, other: "LabelPlacement") -> bool:
        return (
            self.x < other.x + other.width
            and other.x < self.x + self.width
            and self.y < other.y + other.height
            and other.y < self.y + self.height
        )


def label_text(detection: Detection) -> str:
    return f"{detection.class_name} {detection.score:.2f}"


def place_labels(image: np.ndarray, detections: Sequence[Detection]) -> list[LabelPlacement]:
    """Labels that fit without covering one another, best score first (ties: the order given).

    Each label tries, in turn: just above its box's top-left corner, just inside it, just below
    the box. It takes the first spot that lies inside the image and overlaps no label placed
    before; a label with no such spot is left out (its box is still drawn). Deterministic: the
    same detections give the same placements.
    """
    height, width = image.shape[:2]
    scale, thickness = text_scale(image), line_width(image)
    placed: list[LabelPlacement] = []
    for index in sorted(range(len(detections)), key=lambda i: -detections[i].score):
        detection = detections[index]
        text = label_text(detection)
        (text_w, text_h), baseline = cv2.getTextSize(text, FONT, scale, _text_thickness(scale))
        box_w, box_h = text_w + 2 * LABEL_PAD, text_h + baseline + 2 * LABEL_PAD
        x1, y1, _, y2 = (int(round(v)) for v in detection.bbox)
        x = min(max(x1, 0), width - box_w)
        for y in (y1 - box_h, y1 + thickness, y2 + thickness):  # above, inside, below
            spot = LabelPlacement(index, text, x, y, box_w, box_h)
            if x >= 0 and 0 <= y <= height - box_h and not any(spot.overlaps(other) for other in placed):
                placed.append(spot)
                break
    return placed


def _text_thickness(scale: float) -> int:
    return max(1, round(scale))


def _text_color(background: tuple[int, int, int]) -> tuple[int, int, int]:
    b, g, r = background
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 140 else (255, 255, 255)


def draw_label(image: np.ndarray, spot: LabelPlacement, color: tuple[int, int, int], scale: float) -> None:
    """``spot``'s text on a filled box of ``color``, in place."""
    thickness = _text_thickness(scale)
    _, baseline = cv2.getTextSize(spot.text, FONT, scale, thickness)
    cv2.rectangle(image, (spot.x, spot.y), (spot.x + spot.width - 1, spot.y + spot.height - 1), color, -1)
    origin = (spot.x + LABEL_PAD, spot.y + spot.height - LABEL_PAD - baseline)
    cv2.putText(image, spot.text, origin, FONT, scale, _text_color(color), thickness, cv2.LINE_AA)


def draw_detections(image: np.ndarray, detections: Sequence[Detection]) -> np.ndarray:
    """A copy of ``image`` with each detection's box (lowest score first, so the best is on top)
    and the labels (class name and score) that :func:`place_labels` finds room for, over the boxes."""
    canvas = image.copy()
    thickness = line_width(canvas)
    for detection in sorted(detections, key=lambda d: d.score):
        x1, y1, x2, y2 = (int(round(v)) for v in detection.bbox)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), class_color(detection.label), thickness)
    scale = text_scale(canvas)
    for spot in place_labels(canvas, detections):
        draw_label(canvas, spot, class_color(detections[spot.index].label), scale)
    return canvas


def draw_heatmap(
    image: np.ndarray, weights: np.ndarray, query_xy: tuple[float, float], *, alpha: float = 0.55
) -> np.ndarray:
    """``weights`` (h_kv, w_kv), stretched over the whole image as a colour map, with the query marked.

    The key grid covers the padded image; callers crop ``weights`` to the keys inside the image.
    """
    height, width = image.shape[:2]
    normalised = weights / max(float(weights.max()), 1e-12)
    heat = cv2.resize((normalised * 255).astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST)
    overlay = cv2.addWeighted(image, 1 - alpha, cv2.applyColorMap(heat, cv2.COLORMAP_JET), alpha, 0)
    radius = max(4, line_width(image) * 3)
    center = (int(round(query_xy[0])), int(round(query_xy[1])))
    cv2.circle(overlay, center, radius, (255, 255, 255), -1, cv2.LINE_AA)
    cv2.circle(overlay, center, radius, (0, 0, 0), max(1, radius // 3), cv2.LINE_AA)
    return overlay


def titled(panel: np.ndarray, title: str) -> np.ndarray:
    """``panel`` with a dark title bar above it."""
    thickness = max(1, line_width(panel) // 2)
    scale = 0.5 + 0.25 * thickness
    (_, text_h), baseline = cv2.getTextSize(title, FONT, scale, thickness)
    bar = np.full((text_h + baseline + 12, panel.shape[1], 3), 32, dtype=np.uint8)
    cv2.putText(bar, title, (6, text_h + 6), FONT, scale, (255, 255, 255), thickness, cv2.LINE_AA)
    return np.vstack([bar, panel])


def grid(panels: Sequence[np.ndarray], columns: int = 2, gap: int = 8) -> np.ndarray:
    """Panels (any sizes) laid out row by row on a white background."""
    if not panels:
        raise ValueError("grid needs at least one panel")
    columns = max(1, min(columns, len(panels)))
    rows = [panels[i : i + columns] for i in range(0, len(panels), columns)]
    cell_w = max(p.shape[1] for p in panels)
    row_heights = [max(p.shape[0] for p in row) for row in rows]
    canvas = np.full((sum(row_heights) + gap * (len(rows) + 1), columns * cell_w + gap * (columns + 1), 3), 255, np.uint8)
    y = gap
    for row, row_h in zip(rows, row_heights):
        for index, panel in enumerate(row):
            x = gap + index * (cell_w + gap)
            canvas[y : y + panel.shape[0], x : x + panel.shape[1]] = panel
        y += row_h + gap
    return canvas
