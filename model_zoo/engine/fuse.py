"""Inference-time folding of frozen BatchNorm into the preceding convolution.

BN with running statistics is an affine map per channel: ``y = x * s + t`` with
``s = weight / sqrt(running_var + eps)`` and ``t = bias - running_mean * s``. Folded into the conv,
``conv(x, W * s) + t`` saves one pass over every activation map. Results change only at float
rounding level. Applied after the checkpoint is loaded (the folded model no longer has BN keys).
"""

from __future__ import annotations

import torch
from torch import nn

from .backbone import Bottleneck, DeformConv2dPack, ResNet
from .roi_head import Shared2FCBBoxHead


def _folded(conv_weight: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(W * s, t) for conv weight (C_out, C_in, k, k) followed by ``bn``."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return conv_weight * scale.view(-1, 1, 1, 1), bn.bias - bn.running_mean * scale


def _fold_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    weight, bias = _folded(conv.weight, bn)
    fused = nn.Conv2d(
        conv.in_channels, conv.out_channels, conv.kernel_size,
        stride=conv.stride, padding=conv.padding, dilation=conv.dilation, groups=conv.groups, bias=True,
    )  # fmt: skip
    fused.weight.data.copy_(weight)
    fused.bias.data.copy_(bias)
    return fused.to(conv.weight.device)


def _fold_deform(conv: DeformConv2dPack, bn: nn.BatchNorm2d) -> DeformConv2dPack:
    weight, bias = _folded(conv.weight, bn)
    conv.weight.data.copy_(weight)
    conv.bias = nn.Parameter(bias)
    return conv


@torch.no_grad()
def fold_batch_norms(backbone: ResNet) -> ResNet:
    """Fold every BN of ``backbone`` into its conv, in place; BN modules become ``Identity``."""
    backbone.conv1, backbone.bn1 = _fold_conv(backbone.conv1, backbone.bn1), nn.Identity()
    for module in backbone.modules():
        if not isinstance(module, Bottleneck):
            continue
        module.conv1, module.bn1 = _fold_conv(module.conv1, module.bn1), nn.Identity()
        if isinstance(module.conv2, DeformConv2dPack):
            module.conv2 = _fold_deform(module.conv2, module.bn2)
        else:
            module.conv2 = _fold_conv(module.conv2, module.bn2)
        module.bn2 = nn.Identity()
        module.conv3, module.bn3 = _fold_conv(module.conv3, module.bn3), nn.Identity()
        if module.downsample is not None:
            conv, bn = module.downsample
            module.downsample = nn.Sequential(_fold_conv(conv, bn))
    return backbone


@torch.no_grad()
def read_rois_channels_last(head: Shared2FCBBoxHead) -> Shared2FCBBoxHead:
    """Reorder ``head``'s first fc from mmdet's (C, S, S) input order to (S, S, C), in place.

    Every output is the same sum of products in another order (rounding-level change); the head
    then flattens RoI features (K, C, S, S) as (K, S, S, C), a view when they are channels-last.
    """
    if head.reads_channels_last:
        return head
    fc = head.shared_fcs[0]
    weight = fc.weight.view(fc.out_features, *head.roi_shape).permute(0, 2, 3, 1)
    fc.weight.copy_(weight.reshape(fc.out_features, -1).clone())
    head.reads_channels_last = True
    return head
