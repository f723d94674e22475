"""Detector: batch invariance (bit-identical detections alone or in any batch), extreme aspect
ratios, and the kernel and inference-pass options, on synthetic checkpoints at a small scale."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model_zoo.detections import DetectionResult
from model_zoo.engine.detector import build_detector
from model_zoo.errors import AttnzooError
from model_zoo.predictor import Detector, load_detector
from model_zoo.registry import load_registry
from model_zoo.synth import calibration_image, synthetic_state_dict, write_synthetic_checkpoint
from tests.conftest import at_scale
from tools.parity import match_detections

VARIANTS = ("attn1111", "attn0010", "attn1111-dcn", "attn0010-dcn")
CPU_KERNELS = ("fast", "portable")
SCALE = (320, 192)  # the service tests' scale: a forward well under a second
MAX_BATCH = 4  # the service's default max_batch


@pytest.fixture(scope="module", params=VARIANTS)
def variant_state(request):
    entry = at_scale(load_registry().resolve(request.param), SCALE)
    return entry, synthetic_state_dict(entry.arch, seed=7)


def make_detector(entry, state, **options) -> Detector:
    model = build_detector(entry.arch)
    model.load_state_dict(state)
    return Detector(entry, model, device=torch.device("cpu"), **options)


@pytest.fixture(scope="module", params=CPU_KERNELS)
def detector(variant_state, request):
    return make_detector(*variant_state, cpu_kernels=request.param)


def scenes() -> list[np.ndarray]:
    """Five images: four of one padded shape (what a batched forward would group), one other."""
    same = [calibration_image(seed) for seed in (31, 32, 33, 34)]
    return [*same, calibration_image(35)[:300, :560]]


def test_detections_are_bit_identical_alone_and_in_any_batch(detector):
    assert detector.batched_forward is False  # the CPU default: one forward per image
    prepared = [detector.prepare(image) for image in scenes()]
    alone = [detector.infer([item])[0] for item in prepared]
    assert all(len(result.detections) > 0 for result in alone)
    # one padded shape (a batched forward would group them), reversed with another shape, a repeat
    for batch in ([0, 1, 2, 3], [3, 4, 1], [2, 2]):
        assert len(batch) <= MAX_BATCH
        together = detector.infer([prepared[i] for i in batch])
        for i, result in zip(batch, together):
            assert result == alone[i], f"image {i} in batch {batch} differs from its lone run"


def test_batched_forward_matches_lone_runs_by_the_parity_criterion(variant_state):
    """The CUDA path's contract (one forward per padded shape), exercised on CPU: detections equal
    the lone ones by the parity criterion, not necessarily bit for bit."""
    detector = make_detector(*variant_state, batched_forward=True)
    prepared = [detector.prepare(image) for image in scenes()]
    alone = [detector.infer([item])[0] for item in prepared]
    for lone, batched in zip(alone, detector.infer(prepared)):
        match = match_detections(*_columns(lone), *_columns(batched))
        assert match.matched == match.reference == len(batched.detections) > 0


def _columns(result: DetectionResult) -> tuple[list, list, list]:
    return [d.bbox for d in result.detections], [d.score for d in result.detections], [d.label for d in result.detections]


@pytest.mark.parametrize(("height", "width"), [(1, 3000), (3000, 1), (2, 3000), (3000, 2), (1, 1)])
def test_extreme_aspect_ratios_give_a_result(detector, height, width):
    """mmdet fails where a side rounds to 0 pixels; ours keeps it at 1 pixel and answers."""
    image = np.random.default_rng(height * width).integers(0, 256, (height, width, 3), dtype=np.uint8)
    prepared = detector.prepare(image)
    assert min(prepared.resized.image_shape) >= 1
    result = detector.predict(image)
    assert (result.width, result.height) == (width, height)
    for d in result.detections:
        x1, y1, x2, y2 = d.bbox
        assert 0 <= x1 <= x2 <= width and 0 <= y1 <= y2 <= height and d.score > 0.05


def test_unknown_options_are_refused_naming_the_valid_ones(variant_state):
    entry, state = variant_state
    with pytest.raises(AttnzooError, match="unknown cpu_kernels 'turbo'; valid: fast, portable"):
        make_detector(entry, state, cpu_kernels="turbo")
    with pytest.raises(AttnzooError, match="unknown precision 'fp8'"):
        make_detector(entry, state, precision="fp8")


def test_load_detector_passes_the_kernel_options(tmp_path):
    registry = load_registry()
    path = write_synthetic_checkpoint(registry.resolve("attn0010"), tmp_path / "weights.pth", seed=7)
    portable = load_detector("attn0010", path, registry=registry, verify_hash=False, cpu_kernels="portable")
    plain = load_detector("attn0010", path, registry=registry, verify_hash=False, inference_pass=False)
    assert portable.cpu_kernels == "portable"
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in plain.model.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in portable.model.modules())
    with pytest.raises(AttnzooError, match="unknown cpu_kernels"):
        load_detector("attn0010", path, registry=registry, verify_hash=False, cpu_kernels="turbo")
