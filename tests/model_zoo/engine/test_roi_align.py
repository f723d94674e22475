"""Our sparse-product RoIAlign against torchvision's aligned roi_align kernel (mmcv's arithmetic)."""

import dataclasses

import pytest
import torch
from torchvision.ops import roi_align as torchvision_roi_align

from model_zoo.engine.cpu_kernels.roi_align import SparseRoIAlign, sparse_roi_align
from model_zoo.engine.inference_pass import read_rois_channels_last
from model_zoo.engine.roi_head import Shared2FCBBoxHead, StandardRoIHead, extract_roi_features, map_roi_levels
from model_zoo.registry import load_registry


def random_rois(num: int, batch: int, image_size: tuple[int, int], seed: int) -> torch.Tensor:
    """(num, 5) boxes in input pixels: small and large, some past the border, a thin and an
    inverted one (x2 < x1 once shifted by half a pixel)."""
    generator = torch.Generator().manual_seed(seed)
    height, width = image_size
    centre = torch.rand(num, 2, generator=generator) * torch.tensor([width, height]) * 1.2 - 10
    extent = torch.rand(num, 2, generator=generator) ** 2 * torch.tensor([width, height])
    boxes = torch.cat([centre - extent / 2, centre + extent / 2], dim=1)
    boxes[0] = torch.tensor([-20.0, -20.0, width + 20.0, height + 20.0])
    boxes[1] = torch.tensor([5.0, 5.0, 5.1, 60.0])
    boxes[2] = torch.tensor([30.0, 30.0, 29.0, 31.0])
    image = torch.randint(0, batch, (num, 1), generator=generator).float()
    return torch.cat([image, boxes], dim=1)


@pytest.mark.parametrize("sampling_ratio", [0, 2])
@pytest.mark.parametrize("channels_last", [False, True])
def test_matches_torchvision_kernel(sampling_ratio: int, channels_last: bool) -> None:
    generator = torch.Generator().manual_seed(sampling_ratio)
    feature = torch.randn(2, 16, 23, 31, generator=generator)
    if channels_last:
        feature = feature.contiguous(memory_format=torch.channels_last)
    rois = random_rois(60, 2, (23 * 8, 31 * 8), seed=1)
    expected = torchvision_roi_align(feature, rois, (7, 7), 1 / 8, sampling_ratio, aligned=True)
    got = sparse_roi_align(feature, rois, output_size=7, spatial_scale=1 / 8, sampling_ratio=sampling_ratio)
    assert got.shape == expected.shape == (60, 16, 7, 7)
    assert got.is_contiguous(memory_format=torch.channels_last)
    assert (got - expected).abs().max() <= 1e-6 * expected.abs().max()
    if sampling_ratio == 0:
        assert got[2].abs().max() == 0  # an adaptive grid of an inverted RoI has no samples


def test_levels_and_channels_last_head_match_mmdet_order() -> None:
    """Features from several levels, then the head: the plain head's torchvision RoIAlign layers,
    and the fast kernels' sparse layers with the fc permuted, give the logits of flattening
    torchvision's NCHW RoI features in mmdet's order."""
    # the registry's RoI settings (adaptive sampling, finest scale 56, strides 4–32), a narrow head
    spec = dataclasses.replace(load_registry().resolve("attn0010").arch.roi, fc_out_channels=32, num_classes=3)
    assert (spec.output_size, spec.sampling_ratio, len(spec.featmap_strides)) == (7, 0, 4)
    generator = torch.Generator().manual_seed(3)
    features = [torch.randn(1, 8, 256 // s, 320 // s, generator=generator) for s in spec.featmap_strides]
    rois = random_rois(80, 1, (256, 320), seed=4)
    expected_features = torch.zeros(80, 8, 7, 7)
    levels = map_roi_levels(rois, 4, spec.finest_scale)
    assert len(levels.unique()) >= 3
    assert not (0 <= levels[2] < 4)  # the inverted RoI: NaN level, zero features as in mmdet
    for level, stride in enumerate(spec.featmap_strides):
        chosen = levels == level
        expected_features[chosen] = torchvision_roi_align(features[level], rois[chosen], (7, 7), 1 / stride, 0, aligned=True)
    plain_layers = StandardRoIHead(8, spec).roi_layers
    plain_features = extract_roi_features(features, rois, plain_layers, spec)
    assert torch.equal(plain_features, expected_features)
    sparse_layers = [SparseRoIAlign.from_module(layer) for layer in plain_layers]
    got_features = extract_roi_features(features, rois, sparse_layers, spec)
    assert got_features.is_contiguous(memory_format=torch.channels_last)
    assert (got_features - expected_features).abs().max() <= 1e-6 * expected_features.abs().max()

    head = Shared2FCBBoxHead(8, spec).eval()
    torch.nn.init.normal_(head.shared_fcs[0].weight, generator=generator)
    with torch.no_grad():
        expected_logits, expected_deltas = head(expected_features)
        read_rois_channels_last(head)
        logits, deltas = head(got_features)
    assert torch.allclose(logits, expected_logits, rtol=1e-4, atol=1e-4)
    assert torch.allclose(deltas, expected_deltas, rtol=1e-4, atol=1e-4)
