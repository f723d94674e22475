import numpy as np
import pytest
import torch

from model_zoo.engine.preprocess import collate, rescale_size, resize_keep_ratio
from model_zoo.registry import load_registry

SPEC = load_registry().resolve("attn1111").arch.preprocess


@pytest.mark.parametrize(
    ("width", "height", "expected"),
    [(640, 480, (1067, 800)), (480, 640, (800, 1067)), (2000, 500, (1333, 333)), (100, 75, (1067, 800)), (1, 1, (800, 800))],
)
def test_rescale_size_like_mmcv(width, height, expected):
    assert rescale_size(width, height, (1333, 800)) == expected


def test_resize_scale_factor_is_per_axis_and_padding_to_32():
    image = np.zeros((480, 640, 3), dtype=np.uint8)
    resized = resize_keep_ratio(image, SPEC)
    assert resized.image_shape == (800, 1067)
    assert resized.scale_factor == (1067 / 640, 800 / 480)
    assert resized.padded_shape == (800, 1088)


def test_collate_normalises_rgb_and_pads_with_zero_after_normalisation():
    image = np.zeros((480, 640, 3), dtype=np.uint8)
    image[..., 0] = 10  # B
    image[..., 2] = 200  # R
    batch = collate([resize_keep_ratio(image, SPEC)], SPEC, "cpu")
    assert batch.tensor.shape == (1, 3, 800, 1088)
    red = (200 - SPEC.mean[0]) / SPEC.std[0]
    blue = (10 - SPEC.mean[2]) / SPEC.std[2]
    assert batch.tensor[0, 0, 0, 0].item() == pytest.approx(red, rel=1e-6)
    assert batch.tensor[0, 2, 799, 1066].item() == pytest.approx(blue, rel=1e-6)
    assert torch.count_nonzero(batch.tensor[..., 1067:]) == 0
