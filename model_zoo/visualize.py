"""Drawing: detections on an image, attention heat maps, and titled panels in a grid.

Images are BGR uint8 (H, W, 3) arrays, as OpenCV and the engine use them. Everything is drawn
with OpenCV's built-in Hershey font: no font files, nothing fetched at run time.
"""

from __future__ import annotations

import colorsys
from typing import Sequence

import cv2
import numpy as np

from model_zoo.predictor import Detection

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


def _text_color(background: tuple[int, int, int]) -> tuple[int, int, int]:
    b, g, r = background
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 140 else (255, 255, 255)


def draw_label(image: np.ndarray, text: str, origin: tuple[int, int], color: tuple[int, int, int], thickness: int) -> None:
    """Text on a filled box of ``color`` with its top-left at ``origin``, kept inside the image."""
    scale = 0.35 * thickness + 0.15
    (text_w, text_h), baseline = cv2.getTextSize(text, FONT, scale, max(1, thickness // 2))
    x = int(min(max(origin[0], 0), max(image.shape[1] - text_w - 2, 0)))
    y = int(min(max(origin[1], 0), max(image.shape[0] - text_h - baseline - 2, 0)))
    cv2.rectangle(image, (x, y), (x + text_w + 2, y + text_h + baseline + 2), color, -1)
    cv2.putText(image, text, (x + 1, y + text_h + 1), FONT, scale, _text_color(color), max(1, thickness // 2), cv2.LINE_AA)


def draw_detections(image: np.ndarray, detections: Sequence[Detection]) -> np.ndarray:
    """A copy of ``image`` with each detection's box, class name and score drawn (lowest score first)."""
    canvas = image.copy()
    thickness = line_width(canvas)
    for detection in sorted(detections, key=lambda d: d.score):
        color = class_color(detection.label)
        x1, y1, x2, y2 = (int(round(v)) for v in detection.bbox)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), color, thickness)
        label = f"{detection.class_name} {detection.score:.2f}"
        text_h = cv2.getTextSize(label, FONT, 0.35 * thickness + 0.15, 1)[0][1]
        above = y1 - text_h - 2 * thickness - 2
        draw_label(canvas, label, (x1, above if above >= 0 else y1 + thickness), color, thickness)
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
