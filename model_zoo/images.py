"""Image input → BGR uint8 array, decoded the way mmdet's ``LoadImageFromFile`` does.

mmdet decodes with ``cv2.imdecode(buf, cv2.IMREAD_COLOR)``: 3-channel BGR uint8, EXIF orientation
applied, grayscale expanded, alpha dropped, 16-bit scaled down to 8. We do the same so that every
pixel the engine sees equals mmdet's.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import cv2
import numpy as np

from model_zoo.errors import ImageDecodeError

ImageInput = Union[bytes, bytearray, memoryview, str, os.PathLike, np.ndarray]


def decode_image_bytes(data: bytes | bytearray | memoryview) -> np.ndarray:
    """Decode encoded image bytes (JPEG, PNG, WebP, BMP, TIFF, ...) to BGR uint8 (H, W, 3)."""
    buffer = np.frombuffer(data, dtype=np.uint8)
    if buffer.size == 0:
        raise ImageDecodeError("empty image data")
    image = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    if image is None:
        raise ImageDecodeError("data is not an image OpenCV can decode (or it is truncated/corrupt)")
    return image


def load_image(image: ImageInput) -> np.ndarray:
    """Return a BGR uint8 (H, W, 3) array for encoded bytes, a file path or an array.

    Arrays are taken as already-decoded BGR: (H, W, 3) uint8, or (H, W) uint8 grayscale.
    """
    if isinstance(image, np.ndarray):
        return _check_array(image)
    if isinstance(image, (bytes, bytearray, memoryview)):
        return decode_image_bytes(image)
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ImageDecodeError(f"cannot read image {str(path)!r}: {exc.strerror or exc}") from None
        try:
            return decode_image_bytes(data)
        except ImageDecodeError as exc:
            raise ImageDecodeError(f"{str(path)!r}: {exc}") from None
    raise ImageDecodeError(f"unsupported image input of type {type(image).__name__}")


def _check_array(image: np.ndarray) -> np.ndarray:
    if image.dtype != np.uint8:
        raise ImageDecodeError(f"image arrays must be uint8, got {image.dtype}")
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ImageDecodeError(f"image arrays must be (H, W, 3) BGR or (H, W) gray, got shape {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ImageDecodeError(f"image has no pixels: shape {image.shape}")
    return np.ascontiguousarray(image)
