"""Our sparse-product DCN against torchvision's deform_conv2d kernel (mmcv's DCN v1 arithmetic)."""

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import deform_conv2d as torchvision_deform_conv2d

from model_zoo.engine.backbone import DeformConv2dPack
from model_zoo.engine.cpu_kernels.deform_conv import SparseDeformConv2d, bilinear_corners, sparse_deform_conv2d


def random_case(batch: int, channels: int, out_channels: int, height: int, width: int, stride: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, channels, height, width, generator=generator)
    out_height, out_width = (height - 1) // stride + 1, (width - 1) // stride + 1
    offset = 4 * torch.randn(batch, 18, out_height, out_width, generator=generator)
    # Points on and just inside the border rule (y ≤ -1 or y ≥ H samples nothing) and integer offsets.
    offset[:, :, 0, 0] = torch.tensor([-1.0, -2.0, 0.5, float(height), -0.999, 3.0]).repeat(3)
    offset[:, 0::2, -1, -1] = torch.randint(-3, 4, (batch, 9), generator=generator).float()
    weight = torch.randn(out_channels, channels, 3, 3, generator=generator)
    bias = torch.randn(out_channels, generator=generator)
    return x, offset, weight, bias


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("with_bias", [False, True])
def test_matches_torchvision_kernel(stride: int, channels_last: bool, with_bias: bool) -> None:
    x, offset, weight, bias = random_case(2, 8, 5, 9, 11, stride, seed=stride)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    bias = bias if with_bias else None
    expected = torchvision_deform_conv2d(x, offset, weight, bias, stride=stride, padding=1)
    got = sparse_deform_conv2d(x, offset, weight, bias, stride=stride, padding=1)
    assert got.shape == expected.shape
    assert got.is_contiguous(memory_format=torch.channels_last)
    assert (got - expected).abs().max() <= 1e-6 * expected.abs().max()


def test_zero_offsets_are_a_plain_convolution() -> None:
    x, offset, weight, bias = random_case(1, 6, 4, 7, 8, 1, seed=3)
    got = sparse_deform_conv2d(x, torch.zeros_like(offset), weight, bias, stride=1)
    expected = F.conv2d(x, weight, bias, padding=1)
    assert (got - expected).abs().max() <= 1e-6 * expected.abs().max()


def test_border_rule() -> None:
    """One tap moved to y = -1 (nothing), y = -0.5 (half the lower row), y = H - 1 (the last row)."""
    height, width = 4, 5
    offset = torch.zeros(1, 18, 1, 1)
    pixels, weights = bilinear_corners(offset, height, width, stride=1, padding=0)
    assert pixels.shape == weights.shape == (9 * 4,)
    # tap 0 at (0, 0) with zero offset: all weight on corner 0, pixel 0
    assert weights[:4].tolist() == [1.0, 0.0, 0.0, 0.0] and pixels[0] == 0
    for delta_y, expected_total in [(-1.0, 0.0), (-0.5, 0.5), (float(height - 1), 1.0), (float(height), 0.0)]:
        offset[0, 0] = delta_y
        _, weights = bilinear_corners(offset, height, width, stride=1, padding=0)
        assert weights[:4].sum().item() == pytest.approx(expected_total)


def test_batched_images_do_not_mix() -> None:
    x, offset, weight, bias = random_case(3, 4, 6, 6, 6, 1, seed=4)
    batched = sparse_deform_conv2d(x, offset, weight, bias, stride=1)
    for n in range(3):
        single = sparse_deform_conv2d(x[n : n + 1], offset[n : n + 1], weight, bias, stride=1)
        assert torch.allclose(batched[n : n + 1], single, atol=1e-6)


@pytest.mark.parametrize("stride", [1, 2])
def test_bf16_autocast_stays_close(stride: int) -> None:
    x, offset, weight, bias = random_case(1, 8, 8, 9, 9, stride, seed=5)
    expected = torchvision_deform_conv2d(x, offset, weight, bias, stride=stride, padding=1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = sparse_deform_conv2d(x, offset, weight, bias, stride=stride)
    assert (got.float() - expected).abs().max() <= 2e-2 * expected.abs().max()


@pytest.mark.parametrize("with_bias", [False, True])
def test_sparse_module_computes_the_plain_module(with_bias: bool) -> None:
    """The module the fast kernels swap in: same parameters (shared), same output as the backbone's
    torchvision-backed ``DeformConv2dPack``."""
    generator = torch.Generator().manual_seed(6)
    plain = DeformConv2dPack(8, 6, stride=2, bias=with_bias)
    with torch.no_grad():
        for parameter in plain.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator))
    swapped = SparseDeformConv2d.from_module(plain)
    assert list(swapped.state_dict()) == list(plain.state_dict())
    assert swapped.weight.data_ptr() == plain.weight.data_ptr()
    x = torch.randn(2, 8, 9, 11, generator=generator)
    with torch.no_grad():
        expected, got = plain(x), swapped(x)
    assert (got - expected).abs().max() <= 1e-6 * expected.abs().max()
