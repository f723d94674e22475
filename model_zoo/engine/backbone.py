"""ResNet-50 (pytorch style) with frozen BatchNorm, optional DCN v1 and GeneralizedAttention.

Shapes: input (N, 3, Hp, Wp); outputs C2..C5 with 256/512/1024/2048 channels at strides
4/8/16/32. Attribute names equal mmdet's checkpoint key segments (``layer3.0.conv2``,
``gen_attention_block``, ``conv2.conv_offset`` ...), so loading needs no rename table.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import deform_conv2d

from .attention import GeneralizedAttention
from .spec import AttentionSpec, BackboneSpec

EXPANSION = 4


class DeformConv2dPack(nn.Module):
    """DCN v1 3×3 conv whose offsets come from its own ``conv_offset`` (mmcv's ``DCN``), computed
    by torchvision's ``deform_conv2d``.

    The offset layout (per tap, row-major: Δy, Δx) is the same in mmcv and torchvision. mmcv's
    DCN in a ResNet has no bias (``bias=False``, the default), like ``nn.Conv2d(bias=False)``.
    """

    def __init__(self, in_channels: int, out_channels: int, *, stride: int, bias: bool = False) -> None:
        super().__init__()
        self.stride = stride
        self.weight = nn.Parameter(torch.zeros(out_channels, in_channels, 3, 3))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.conv_offset = nn.Conv2d(in_channels, 2 * 3 * 3, 3, stride=stride, padding=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (Tensor[N, C_in, H, W]) → Tensor[N, C_out, H / stride, W / stride]."""
        offset = self.conv_offset(x)
        # Under autocast x and offset may be reduced precision; the kernel wants the weight's dtype.
        dtype = self.weight.dtype
        stride = (self.stride, self.stride)
        return deform_conv2d(x.to(dtype), offset.to(dtype), self.weight, self.bias, stride=stride, padding=(1, 1))


class Bottleneck(nn.Module):
    """conv1 1×1 → conv2 3×3 (stride, optionally DCN) → [attention] → conv3 1×1, plus shortcut."""

    def __init__(
        self,
        in_channels: int,
        planes: int,
        *,
        stride: int,
        with_dcn: bool,
        attention: AttentionSpec | None,
    ) -> None:
        super().__init__()
        out_channels = planes * EXPANSION
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        if with_dcn:
            self.conv2: nn.Module = DeformConv2dPack(planes, planes, stride=stride)
        else:
            self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Sequential | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        self.gen_attention_block: GeneralizedAttention | None = None
        if attention is not None:
            self.gen_attention_block = GeneralizedAttention(
                planes,
                num_heads=attention.num_heads,
                attention_type=attention.type,
                kv_stride=attention.kv_stride,
                position_magnitude=attention.position_magnitude,
            )

    def conv2_features(self, x: torch.Tensor) -> torch.Tensor:
        """conv1 → BN → ReLU → conv2 → BN → ReLU: the attention block's input, (N, planes, H', W')."""
        out = self.relu(self.bn1(self.conv1(x)))
        features: torch.Tensor = self.relu(self.bn2(self.conv2(out)))
        return features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.conv2_features(x)
        if self.gen_attention_block is not None:
            out = self.gen_attention_block(out)
        out = self.bn3(self.conv3(out))
        summed: torch.Tensor = self.relu(out.add_(identity))  # in place: a fresh map costs page faults
        return summed


class ResNet(nn.Module):
    """The backbone; ``forward`` returns [C2, C3, C4, C5]. BatchNorm always uses running stats."""

    def __init__(self, spec: BackboneSpec) -> None:
        super().__init__()
        stem_channels = spec.base_channels
        self.conv1 = nn.Conv2d(3, stem_channels, 7, stride=2, padding=3, bias=False)
        self.bn1: nn.Module = nn.BatchNorm2d(stem_channels)  # nn.Identity once folded (engine.inference_pass)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_channels = stem_channels
        self.stage_names: list[str] = []
        for index, num_blocks in enumerate(spec.stage_blocks):
            stage = index + 1
            planes = spec.base_channels * 2**index
            attention = spec.attention if spec.attention and stage in spec.attention.stages else None
            blocks = []
            for block in range(num_blocks):
                blocks.append(
                    Bottleneck(
                        in_channels,
                        planes,
                        stride=(1 if stage == 1 else 2) if block == 0 else 1,
                        with_dcn=stage in spec.dcn_stages,
                        attention=attention,
                    )
                )
                in_channels = planes * EXPANSION
            name = f"layer{stage}"
            self.add_module(name, nn.Sequential(*blocks))
            self.stage_names.append(name)

    def train(self, mode: bool = True) -> "ResNet":
        # Frozen BN (norm_eval=True): the running statistics are used even in train mode.
        super().train(mode)
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eval()
        return self

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """conv1 → BN → ReLU → max-pool: (N, 3, Hp, Wp) → (N, 64, Hp / 4, Wp / 4)."""
        pooled: torch.Tensor = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return pooled

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        features = []
        for name in self.stage_names:
            x = getattr(self, name)(x)
            features.append(x)
        return features

    def block_input(self, x: torch.Tensor, *, stage: int, block: int) -> torch.Tensor:
        """The input of block ``block`` (0-based) of ``stage`` (1-based) for images x (N, 3, Hp, Wp)."""
        x = self.stem(x)
        for name in self.stage_names[: stage - 1]:
            x = getattr(self, name)(x)
        block_input: torch.Tensor = getattr(self, self.stage_names[stage - 1])[:block](x)
        return block_input
