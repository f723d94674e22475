import cv2
import pytest
import torch

from model_zoo.engine.detector import build_detector
from model_zoo.predictor import Detector
from model_zoo.registry import load_registry
from model_zoo.synth import calibration_image, synthetic_state_dict
from tests.conftest import at_scale

# Forward tests use two variants that together cover every module: 1111 attention + DCN, and 0010.
FORWARD_VARIANTS = ["attn1111-dcn", "attn0010"]


@pytest.mark.parametrize("alias", load_registry().aliases)
def test_variant_structure_follows_registry(alias):
    arch = load_registry().resolve(alias).arch
    with torch.device("meta"):
        blocks = dict(build_detector(arch).backbone.named_modules())
    with_attention = [name for name in blocks if name.endswith("gen_attention_block")]
    assert len(with_attention) == 6 + 3  # every block of stages 3 and 4
    dcn = [name for name in blocks if name.endswith("conv2.conv_offset")]
    assert len(dcn) == (4 + 6 + 3 if arch.with_dcn else 0)
    assert ("layer3.0.gen_attention_block.query_conv" in blocks) == (arch.attention_type == "1111")


@pytest.fixture(scope="module", params=FORWARD_VARIANTS)
def detector(request):
    entry = at_scale(load_registry().resolve(request.param))
    model = build_detector(entry.arch)
    model.load_state_dict(synthetic_state_dict(entry.arch, seed=3))
    return Detector(entry, model, device=torch.device("cpu"))


def test_detections_are_well_formed(detector):
    image = calibration_image(11)[:300, :500]
    result = detector.predict(image)
    assert (result.width, result.height) == (500, 300)
    assert 0 < len(result.detections) <= 100
    scores = [d.score for d in result.detections]
    assert scores == sorted(scores, reverse=True) and min(scores) > 0.05
    for d in result.detections:
        x1, y1, x2, y2 = d.bbox
        assert 0 <= x1 <= x2 <= 500 + 1e-3 and 0 <= y1 <= y2 <= 300 + 1e-3
        assert 0 <= d.label < 80


def test_batch_of_same_shape_equals_single(detector):
    """Bit-identical (issue 12): the batch does not change an image's detections at all."""
    first, second = calibration_image(12), calibration_image(13)
    prepared = [detector.prepare(first), detector.prepare(second)]
    together = detector.infer(prepared)
    alone = [detector.infer([p])[0] for p in prepared]
    assert all(len(single.detections) > 0 for single in alone)
    assert together == alone


def test_inputs_bytes_path_and_array_agree(detector, tmp_path):
    image = calibration_image(14)
    path = tmp_path / "scene.png"
    cv2.imwrite(str(path), image)
    from_array = detector.predict(image)
    assert detector.predict(path) == from_array
    assert detector.predict(path.read_bytes()) == from_array
