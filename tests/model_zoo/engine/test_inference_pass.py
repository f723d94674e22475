"""prepare_for_inference: the one place that knows about BN folding, channels-last and CPU kernels."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.ops import RoIAlign

from model_zoo.engine.attention import GeneralizedAttention
from model_zoo.engine.backbone import DeformConv2dPack, ResNet
from model_zoo.engine.cpu_kernels.deform_conv import SparseDeformConv2d
from model_zoo.engine.cpu_kernels.onednn import OneDNNGeneralizedAttention, OneDNNLinear
from model_zoo.engine.cpu_kernels.roi_align import SparseRoIAlign
from model_zoo.engine.detector import build_detector
from model_zoo.engine.inference_pass import FlattenChannelsLast, fold_batch_norms, prepare_for_inference
from model_zoo.registry import load_registry
from model_zoo.synth import synthetic_state_dict

ENGINE = Path(__file__).resolve().parents[3] / "model_zoo" / "engine"
MODEL_FILES = ["anchors", "attention", "backbone", "boxes", "detector", "fpn", "preprocess", "roi_head", "rpn"]
KERNEL_CLASSES = (SparseDeformConv2d, SparseRoIAlign, OneDNNGeneralizedAttention, OneDNNLinear, FlattenChannelsLast)


@pytest.mark.parametrize("name", MODEL_FILES)
def test_model_files_import_nothing_from_the_cpu_kernels_or_the_pass(name):
    tree = ast.parse((ENGINE / f"{name}.py").read_text())
    imported = {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    forbidden = [m for m in imported if "cpu_kernels" in m or "inference_pass" in m or m.lstrip(".") in {"onednn", "sparse"}]
    assert not forbidden, f"engine/{name}.py imports {forbidden}"


def test_importing_the_engine_leaves_the_warnings_filters_alone():
    code = (
        "import warnings, cv2, numpy, torch, torchvision; before = list(warnings.filters); "
        "import model_zoo.engine.inference_pass, model_zoo.predictor; "
        "assert warnings.filters == before, [f for f in warnings.filters if f not in before]"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ENGINE.parents[1], check=False)
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def dcn_arch():
    return load_registry().resolve("attn1111-dcn").arch


def kinds(model: nn.Module) -> set[type]:
    return {type(module) for module in model.modules()}


def test_portable_keeps_the_plain_modules_and_fast_swaps_the_kernels(dcn_arch):
    with torch.device("meta"):
        plain = build_detector(dcn_arch)
    assert not kinds(plain) & set(KERNEL_CLASSES)
    assert {DeformConv2dPack, GeneralizedAttention, RoIAlign, nn.Linear, nn.BatchNorm2d} <= kinds(plain)

    portable = prepare_for_inference(build_detector(dcn_arch), "cpu", cpu_kernels="portable")
    assert not kinds(portable) & set(KERNEL_CLASSES)
    assert nn.BatchNorm2d not in kinds(portable)  # folded on every path
    assert {DeformConv2dPack, GeneralizedAttention, RoIAlign, nn.Linear} <= kinds(portable)

    fast = prepare_for_inference(build_detector(dcn_arch), "cpu", cpu_kernels="fast")
    assert set(KERNEL_CLASSES) <= kinds(fast)
    assert not {DeformConv2dPack, GeneralizedAttention, RoIAlign, nn.BatchNorm2d} & kinds(fast)
    head = fast.roi_head.bbox_head
    assert all(type(fc) is OneDNNLinear for fc in [*head.shared_fcs, head.fc_cls, head.fc_reg])
    assert all(not module.training for module in fast.modules())
    assert fast.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)


def test_unknown_kernels_are_refused_naming_the_valid_ones(dcn_arch):
    with torch.device("meta"):
        model = build_detector(dcn_arch)
    with pytest.raises(ValueError, match="unknown cpu_kernels 'turbo'; valid: fast, portable"):
        prepare_for_inference(model, "cpu", cpu_kernels="turbo")


def test_folded_backbone_computes_the_unfolded_one(dcn_arch):
    """The synthetic weights' BNs have random statistics, so a wrong fold cannot hide behind identity BNs."""
    backbone = ResNet(dcn_arch.backbone).eval()
    state = synthetic_state_dict(dcn_arch, seed=4)
    backbone.load_state_dict({key.removeprefix("backbone."): value for key, value in state.items() if key.startswith("backbone.")})
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = backbone(x)
    fold_batch_norms(backbone)
    assert not any(isinstance(module, nn.BatchNorm2d) for module in backbone.modules())
    assert backbone.layer2[0].conv2.bias is not None  # a DCN with the folded shift
    with torch.inference_mode():
        folded = backbone(x)
        fold_batch_norms(backbone)  # a second pass changes nothing
        again = backbone(x)
    for a, b, c in zip(expected, folded, again):
        assert (a - b).abs().max() <= 1e-5 * a.abs().max()
        assert torch.equal(b, c)
