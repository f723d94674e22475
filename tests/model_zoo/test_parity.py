"""Our engine computes what mmdet 3.3 computes, checked against committed mmdet outputs.

``tests/fixtures/parity/`` was written by ``tools/parity.py reference`` in the mmdet reference
environment (README "Parity with mmdet"): per variant, a synthetic checkpoint (``model_zoo.synth``,
seed recorded in the fixture) run through ``mmdet.apis.inference_detector`` on the photos in
``tests/fixtures/images``, with mmdet's preprocessed input, FPN outputs, RPN proposals and final
detections captured by hooks. mmdet itself is not needed here: we regenerate the same checkpoint,
load it the way users do (``load_detector``) and compare stage by stage, so a failure names the
first stage that diverges. Tolerances are in ``tools/parity.py`` and explained in the README.

Every comparison runs three ways on CPU: the plain model definition (no inference pass), the
``portable`` kernels (what CUDA runs: torchvision ops, one SDPA call) and the ``fast`` CPU kernels.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch

from model_zoo.engine.detector import build_detector
from model_zoo.registry import BUNDLED_METAFILE, load_registry
from model_zoo.synth import write_synthetic_checkpoint

REPO_ROOT = Path(__file__).resolve().parents[2]


def _load_tool():
    spec = importlib.util.spec_from_file_location("attnzoo_parity_tool", REPO_ROOT / "tools" / "parity.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


parity = _load_tool()

VARIANTS = ("attn1111", "attn0010", "attn1111-dcn", "attn0010-dcn")
# How the detector runs: load_detector options of each way.
WAYS = {
    "plain": {"inference_pass": False},
    "portable": {"cpu_kernels": "portable"},
    "fast": {"cpu_kernels": "fast"},
}
IMAGES = [p.name for p in parity.list_images()]
# One official-scale (1333x800) image per variant; together they cover every image kind but one.
FULL_SCALE_IMAGE = {
    "attn1111": "rocket_exif6.jpg",
    "attn0010": "coffee_landscape.png",
    "attn1111-dcn": "camera_gray.png",
    "attn0010-dcn": "astronaut_portrait.jpg",
}


@lru_cache(maxsize=None)
def fixture(variant: str, scale: str) -> dict:
    path = parity.fixture_path(variant, scale)
    assert path.is_file(), f"missing {path}: run tools/parity.py reference in the mmdet environment"
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def registry():
    return load_registry(BUNDLED_METAFILE)


@pytest.fixture(scope="module", params=VARIANTS)
def checkpoint(request, tmp_path_factory, registry):
    """(variant, path) of the synthetic checkpoint the fixtures were made with; one file per
    variant at a time (about 190 MB), removed when that variant's tests are done."""
    variant = request.param
    seed = fixture(variant, "small")["seed"]
    path = write_synthetic_checkpoint(
        registry.resolve(variant), tmp_path_factory.mktemp("parity") / f"{variant}_seed{seed}.pth", seed=seed
    )
    yield variant, path
    path.unlink()


@pytest.fixture(scope="module", params=list(WAYS))
def small_detector(checkpoint, registry, request):
    variant, path = checkpoint
    return variant, parity.our_detector(variant, path, fixture(variant, "small")["scale"], registry, **WAYS[request.param])


def test_fixtures_cover_every_variant_image_and_kind():
    assert len(IMAGES) >= 4
    for variant in VARIANTS:
        small, full = fixture(variant, "small"), fixture(variant, "full")
        assert small["seed"] == full["seed"] and small["scale"] == [512, 320] and full["scale"] == [1333, 800]
        assert sorted(small["images"]) == sorted(full["images"]) == sorted(IMAGES)
        # A final-stage check over no detections would prove nothing.
        with_detections = [n for n, record in small["images"].items() if record["detections"]["scores"]]
        assert len(with_detections) >= 3, f"{variant}: mmdet has detections on {with_detections} only"
    seeds = {fixture(v, "small")["seed"] for v in VARIANTS}
    assert len(seeds) > 1 and 0 not in seeds
    shapes = {tuple(fixture("attn0010", "small")["images"][n]["ori_shape"]) for n in IMAGES}
    assert any(h > w for h, w in shapes) and any(w > h for h, w in shapes), "need portrait and landscape"
    assert any(fixture("attn0010", "small")["images"][n]["scale_factor"][0] > 1 for n in IMAGES), "need an upscaled image"


@pytest.mark.parametrize("variant", VARIANTS)
def test_state_dict_keys_and_shapes_equal_mmdets(variant, registry):
    """Names and shapes; the order may differ (mmdet registers fc_cls/fc_reg before shared_fcs)."""
    reference = json.loads(parity.keys_path(variant).read_text())["keys"]
    ours = [[k, list(v.shape)] for k, v in build_detector(registry.resolve(variant).arch).state_dict().items()]
    missing = sorted({k for k, _ in reference} - {k for k, _ in ours})
    extra = sorted({k for k, _ in ours} - {k for k, _ in reference})
    assert not missing and not extra, f"{variant}: keys mmdet has and we lack: {missing[:5]}; keys only we have: {extra[:5]}"
    shapes = dict(ours)
    wrong = [(k, shape, shapes[k]) for k, shape in reference if shapes[k] != shape]
    assert not wrong, f"{variant}: shapes differ (key, mmdet, ours): {wrong[:5]}"


def test_regenerated_synthetic_weights_are_the_fixtures(checkpoint):
    """The fixtures are only meaningful for the weights they were made with: if model_zoo/synth.py
    changes, regenerate them (tools/parity.py reference) instead of chasing a fake divergence."""
    variant, path = checkpoint
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    recorded = json.loads(parity.keys_path(variant).read_text())
    assert recorded["synthetic_weights"]["seed"] == fixture(variant, "small")["seed"]
    reference = {key: sums for (key, _), sums in zip(recorded["keys"], recorded["synthetic_weights"]["checksums"])}
    assert sorted(state) == sorted(reference)
    ours = parity.weights_checksums(state)
    changed = [
        key
        for key, (total, squares) in reference.items()
        if abs(ours[key][1] - squares) > 1e-6 * squares + 1e-12
        or abs(ours[key][0] - total) > 1e-6 * np.sqrt(squares * state[key].numel()) + 1e-12
    ]
    assert not changed, (
        f"{variant}: the synthetic weights differ from those the fixtures were made with (first: {changed[:3]}); "
        "model_zoo/synth.py changed? Regenerate tests/fixtures/parity with tools/parity.py reference"
    )


@pytest.mark.parametrize("image", IMAGES)
def test_small_scale_matches_mmdet_stage_by_stage(small_detector, image):
    variant, detector = small_detector
    result, captured = parity.run_ours(detector, parity.IMAGES / image)
    report = parity.compare_image(variant, "small", image, fixture(variant, "small")["images"][image], result, captured)
    assert not report.problems, "diverges from mmdet (earliest stage first):\n" + "\n".join(report.problems)
    assert report.detections.matched == report.detections.reference


@pytest.mark.slow
@pytest.mark.parametrize("way", list(WAYS))
def test_full_scale_matches_mmdet(checkpoint, registry, way):
    variant, path = checkpoint
    image = FULL_SCALE_IMAGE[variant]
    reference = fixture(variant, "full")
    detector = parity.our_detector(variant, path, reference["scale"], registry, **WAYS[way])
    result, captured = parity.run_ours(detector, parity.IMAGES / image)
    report = parity.compare_image(variant, "full", image, reference["images"][image], result, captured)
    assert not report.problems, "diverges from mmdet (earliest stage first):\n" + "\n".join(report.problems)
    assert report.detections.matched == report.detections.reference
