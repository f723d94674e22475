"""The one pass that turns a built, loaded detector into the one that serves: ``prepare_for_inference``.

The model files define the network as mmdet computes it, in plain PyTorch and torchvision ops.
Everything done only for speed happens here, after the checkpoint is loaded, and nowhere else:

1. eval mode, and every frozen BatchNorm folded into the convolution before it (all devices);
2. with ``cpu_kernels="fast"`` on CPU, modules swapped for the rewrites in ``cpu_kernels/``:
   DCNs → ``SparseDeformConv2d``, RoIAlign layers → ``SparseRoIAlign``, attention blocks →
   ``OneDNNGeneralizedAttention``, box-head layers → ``OneDNNLinear``, and the box head reads its
   RoI features in channels-last order (its first fc's columns permuted to match);
3. parameters moved to ``device`` in channels-last memory format (activations follow).

``cpu_kernels="portable"`` stops after 1 and 3: exactly the kernels and formulation CUDA runs
(torchvision's ``deform_conv2d`` and ``roi_align``, one ``scaled_dot_product_attention`` call per
attention block, ``nn.Linear``), so that path can be tested on CPU. CUDA always takes it. Every
step changes results only at float-rounding level (parity with mmdet holds with and without it).

BN folding: BN with running statistics is ``y = x * s + t`` per channel with
``s = weight / sqrt(running_var + eps)`` and ``t = bias - running_mean * s``, so
``bn(conv(x, W)) = conv(x, W * s) + t``: one pass over every activation map saved. The folded
model has no BN keys; load checkpoints before this pass.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import RoIAlign

from .attention import GeneralizedAttention
from .backbone import Bottleneck, DeformConv2dPack, ResNet
from .cpu_kernels import sparse
from .cpu_kernels.deform_conv import SparseDeformConv2d
from .cpu_kernels.onednn import OneDNNGeneralizedAttention, OneDNNLinear
from .cpu_kernels.roi_align import SparseRoIAlign
from .detector import FasterRCNN
from .roi_head import Shared2FCBBoxHead, StandardRoIHead

CPU_KERNELS = ("fast", "portable")


def prepare_for_inference(model: FasterRCNN, device: torch.device | str, *, cpu_kernels: str = "fast") -> FasterRCNN:
    """Make ``model`` (weights loaded) inference-ready on ``device``, in place; returns it.

    Args:
        cpu_kernels: "fast" (default): the CPU rewrites of ``cpu_kernels/``; "portable": the
            kernels CUDA uses. Ignored on other devices, which always run the portable kernels.

    Raises:
        ValueError: an unknown ``cpu_kernels`` value.
    """
    if cpu_kernels not in CPU_KERNELS:
        raise ValueError(f"unknown cpu_kernels {cpu_kernels!r}; valid: {', '.join(CPU_KERNELS)}")
    device = torch.device(device)
    model.eval()
    fold_batch_norms(model.backbone)
    if device.type == "cpu" and cpu_kernels == "fast":
        use_fast_cpu_kernels(model)
    # Channels-last activations: the layout oneDNN's (CPU) and cuDNN's fastest convolutions take.
    return model.to(device).to(memory_format=torch.channels_last).eval()


# --- 1. BatchNorm folding ------------------------------------------------------------------------


def _folded(conv_weight: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(W * s, t) for conv weight (C_out, C_in, k, k) followed by ``bn``."""
    if bn.weight is None or bn.bias is None or bn.running_mean is None or bn.running_var is None:
        raise ValueError("only a BatchNorm with affine parameters and running statistics can be folded")
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return conv_weight * scale.view(-1, 1, 1, 1), bn.bias - bn.running_mean * scale


def _pair(values: tuple[int, ...]) -> tuple[int, int]:
    return values[0], values[1]


def _fold_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    weight, bias = _folded(conv.weight, bn)
    padding = conv.padding if isinstance(conv.padding, str) else _pair(conv.padding)
    fused = nn.Conv2d(
        conv.in_channels, conv.out_channels, _pair(conv.kernel_size),
        stride=_pair(conv.stride), padding=padding, dilation=_pair(conv.dilation), groups=conv.groups, bias=True,
        device=conv.weight.device,
    )  # fmt: skip
    fused.weight.copy_(weight)
    fused.bias = nn.Parameter(bias)
    return fused


def _fold_deform(conv: DeformConv2dPack, bn: nn.BatchNorm2d) -> DeformConv2dPack:
    weight, bias = _folded(conv.weight, bn)
    out_channels, in_channels = weight.shape[:2]
    fused = DeformConv2dPack(in_channels, out_channels, stride=conv.stride, bias=True).to(weight.device)
    fused.weight.copy_(weight)
    fused.bias = nn.Parameter(bias)
    fused.conv_offset = conv.conv_offset
    return fused


def _fold(conv: nn.Module, bn: nn.BatchNorm2d) -> nn.Module:
    if isinstance(conv, DeformConv2dPack):
        return _fold_deform(conv, bn)
    if isinstance(conv, nn.Conv2d):
        return _fold_conv(conv, bn)
    raise TypeError(f"cannot fold a BatchNorm into a {type(conv).__name__}")


@torch.no_grad()
def fold_batch_norms(backbone: ResNet) -> ResNet:
    """Fold every BN of ``backbone`` into its conv, in place; BN modules become ``Identity``.
    BNs already folded (``Identity``) are left alone."""
    if isinstance(backbone.bn1, nn.BatchNorm2d):
        backbone.conv1, backbone.bn1 = _fold_conv(backbone.conv1, backbone.bn1), nn.Identity()
    for block in backbone.modules():
        if not isinstance(block, Bottleneck):
            continue
        for conv_name, bn_name in (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")):
            bn = getattr(block, bn_name)
            if isinstance(bn, nn.BatchNorm2d):
                setattr(block, conv_name, _fold(getattr(block, conv_name), bn))
                setattr(block, bn_name, nn.Identity())
        if block.downsample is not None and len(block.downsample) == 2:
            conv, bn = block.downsample
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                block.downsample = nn.Sequential(_fold_conv(conv, bn))
    return backbone


# --- 2. the fast CPU kernels -----------------------------------------------------------------------


class FlattenChannelsLast(nn.Module):
    """RoI features (K, C, S, S) → rows (K, S·S·C) in (S, S, C) order: a view when the features
    are channels-last in memory (as ``SparseRoIAlign`` returns them)."""

    def forward(self, roi_features: torch.Tensor) -> torch.Tensor:
        return roi_features.permute(0, 2, 3, 1).flatten(1)


@torch.no_grad()
def read_rois_channels_last(head: Shared2FCBBoxHead) -> Shared2FCBBoxHead:
    """Reorder ``head``'s first fc from mmdet's (C, S, S) input order to (S, S, C), in place, and
    flatten RoI features that way. Every output is the same sum of products in another order."""
    if isinstance(head.flatten, FlattenChannelsLast):
        return head
    fc = head.shared_fcs[0]
    if not isinstance(fc, nn.Linear):
        raise TypeError(f"expected the box head's first fc to be an nn.Linear, got {type(fc).__name__}")
    weight = fc.weight.view(fc.out_features, *head.roi_shape).permute(0, 2, 3, 1)
    fc.weight.copy_(weight.reshape(fc.out_features, -1).clone())
    head.flatten = FlattenChannelsLast()
    return head


def use_fast_cpu_kernels(model: FasterRCNN) -> FasterRCNN:
    """Swap the modules of ``model`` that have a CPU rewrite for it, in place (parameters shared)."""
    sparse.acknowledge_beta_warning()
    for block in model.backbone.modules():
        if not isinstance(block, Bottleneck):
            continue
        if isinstance(block.conv2, DeformConv2dPack) and not isinstance(block.conv2, SparseDeformConv2d):
            block.conv2 = SparseDeformConv2d.from_module(block.conv2)
        attention = block.gen_attention_block
        if isinstance(attention, GeneralizedAttention) and not isinstance(attention, OneDNNGeneralizedAttention):
            block.gen_attention_block = OneDNNGeneralizedAttention.from_module(attention)
    roi_head: StandardRoIHead = model.roi_head
    for index, layer in enumerate(roi_head.roi_layers):
        if isinstance(layer, RoIAlign) and not isinstance(layer, SparseRoIAlign):
            roi_head.roi_layers[index] = SparseRoIAlign.from_module(layer)
    head = read_rois_channels_last(roi_head.bbox_head)
    for index, fc in enumerate(head.shared_fcs):
        head.shared_fcs[index] = _onednn(fc)
    head.fc_cls, head.fc_reg = _onednn(head.fc_cls), _onednn(head.fc_reg)
    return model


def _onednn(layer: nn.Module) -> nn.Linear:
    if isinstance(layer, OneDNNLinear):
        return layer
    if isinstance(layer, nn.Linear):
        return OneDNNLinear.from_linear(layer)
    raise TypeError(f"expected an nn.Linear, got {type(layer).__name__}")
