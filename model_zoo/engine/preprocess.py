"""Test-time pre-processing exactly as mmdet 3.3's pipeline + ``DetDataPreprocessor``.

Shapes: H, W original image; h, w resized (unpadded) image; Hp, Wp padded to the size divisor.

1. keep-ratio resize of the **uint8** BGR image with OpenCV bilinear (``mmcv.imrescale``);
2. BGR → RGB, float, ``(x - mean) / std`` (torch, per channel);
3. pad bottom/right with 0 (after normalisation) to a multiple of ``size_divisor``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np
import numpy.typing as npt
import torch

from .spec import PreprocessSpec


@dataclass(frozen=True)
class ResizedImage:
    """A resized uint8 BGR image (h, w, 3) with what is needed to map boxes back."""

    pixels: npt.NDArray[np.uint8]
    original_shape: tuple[int, int]  # (H, W) pixels
    scale_factor: tuple[float, float]  # (w / W, h / H), as mmdet stores it
    size_divisor: int

    @property
    def image_shape(self) -> tuple[int, int]:
        """(h, w) of the resized image, before padding."""
        return self.pixels.shape[0], self.pixels.shape[1]

    @property
    def padded_shape(self) -> tuple[int, int]:
        h, w = self.image_shape
        d = self.size_divisor
        return math.ceil(h / d) * d, math.ceil(w / d) * d


@dataclass(frozen=True)
class ImageBatch:
    """Normalised, padded images ready for the backbone.

    Attributes:
        tensor (Tensor[N, 3, Hp, Wp]): RGB, normalised, zero-padded bottom/right.
        image_shapes: per image (h, w) of the resized image in pixels (boxes are clipped to it).
        scale_factors: per image (w / W, h / H); boxes are divided by it to reach original pixels.
    """

    tensor: torch.Tensor
    image_shapes: list[tuple[int, int]]
    scale_factors: list[tuple[float, float]]


def rescale_size(width: int, height: int, scale: tuple[int, int]) -> tuple[int, int]:
    """mmcv's keep-ratio target size: largest size fitting ``scale`` (long, short) → (new_w, new_h).

    A side that mmcv's rounding takes to 0 pixels (aspect ratios beyond about 1:2700 at 1333×800,
    where mmdet fails) is kept at 1 pixel, so every image gets a result.
    """
    long_edge, short_edge = max(scale), min(scale)
    factor = min(long_edge / max(height, width), short_edge / min(height, width))
    return max(int(width * factor + 0.5), 1), max(int(height * factor + 0.5), 1)


def resize_keep_ratio(image: npt.NDArray[np.uint8], spec: PreprocessSpec) -> ResizedImage:
    """Resize a BGR uint8 (H, W, 3) image the way mmdet's ``Resize(keep_ratio=True)`` does."""
    height, width = image.shape[:2]
    new_w, new_h = rescale_size(width, height, spec.scale)
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    return ResizedImage(
        pixels=np.asarray(resized),  # the same array, typed: OpenCV's stubs say only "a matrix"
        original_shape=(height, width),
        scale_factor=(new_w / width, new_h / height),
        size_divisor=spec.size_divisor,
    )


def collate(images: Sequence[ResizedImage], spec: PreprocessSpec, device: torch.device | str) -> ImageBatch:
    """Normalise and pad resized images into one batch tensor on ``device``.

    All images are padded to the batch's largest padded shape; callers that need results
    independent of the batch give images of one padded shape only.
    """
    pad_h = max(image.padded_shape[0] for image in images)
    pad_w = max(image.padded_shape[1] for image in images)
    mean = torch.tensor(spec.mean, dtype=torch.float32, device=device).view(3, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32, device=device).view(3, 1, 1)
    batch = torch.zeros((len(images), 3, pad_h, pad_w), dtype=torch.float32, device=device)
    for index, image in enumerate(images):
        # (h, w, 3) BGR uint8 → (3, h, w) RGB float, normalised as mmengine does (subtract, divide).
        chw = torch.from_numpy(image.pixels).to(device).permute(2, 0, 1)[[2, 1, 0]].float()
        h, w = image.image_shape
        batch[index, :, :h, :w] = (chw - mean) / std
    return ImageBatch(
        tensor=batch,
        image_shapes=[image.image_shape for image in images],
        scale_factors=[image.scale_factor for image in images],
    )
