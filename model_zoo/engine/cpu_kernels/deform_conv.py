"""Deformable convolution v1 (3×3, no groups, no mask) as a sparse product and a GEMM.

A DCN output is ``out[p] = Σ_k W_k · bilinear(x, p·stride − pad + k + Δ_k(p))``. Once the offsets
are known, the bilinear sample of tap k is a fixed linear map of ``x``: a sparse matrix ``S_k``
with at most four non-zeros (the corner weights) per output position. So with the input as rows
``X: (H·W, C_in)`` in channels-last order,

    out = [S_1 X, …, S_9 X] · Wᵀ

one sparse product (``sparse.py``) writes the nine samples of every output position side by side,
(H_out·W_out, 9·C_in), and one GEMM (``onednn.linear``) applies the weights. torchvision's CPU
``deform_conv2d`` builds the same column buffer with a single thread; the sparse product uses
every thread. The corner weights are computed as torchvision's and mmcv's bilinear kernels do
(same floor, same border rules); only the order of the final sums differs (float32 rounding).
``SparseDeformConv2d`` is the module the inference pass swaps in for the backbone's DCNs.
"""

from __future__ import annotations

import torch

from ..backbone import DeformConv2dPack
from .onednn import linear
from .sparse import CORNERS, csr_matrix, sparse_matmul

KERNEL_SIZE = 3
TAPS = KERNEL_SIZE * KERNEL_SIZE


class SparseDeformConv2d(DeformConv2dPack):
    """``DeformConv2dPack`` (same parameters) computed by ``sparse_deform_conv2d`` on CPU."""

    @classmethod
    def from_module(cls, conv: DeformConv2dPack) -> SparseDeformConv2d:
        """A DCN sharing ``conv``'s parameters (and its bias, if it has one)."""
        out_channels, in_channels = conv.weight.shape[:2]
        with torch.device("meta"):
            swapped = cls(in_channels, out_channels, stride=conv.stride, bias=conv.bias is not None)
        swapped.load_state_dict(conv.state_dict(), assign=True)
        return swapped

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            return super().forward(x)
        return sparse_deform_conv2d(x, self.conv_offset(x), self.weight, self.bias, stride=self.stride, padding=1)


def sparse_deform_conv2d(
    x: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    *,
    stride: int,
    padding: int = 1,
) -> torch.Tensor:
    """3×3 DCN v1 on CPU, same contract as ``torchvision.ops.deform_conv2d`` (dilation 1, one group).

    x: (N, C_in, H, W); offset: (N, 18, H_out, W_out), per tap (Δy, Δx) row-major, in input
    pixels; weight: (C_out, C_in, 3, 3); bias: (C_out,) or None. Returns (N, C_out, H_out, W_out)
    in channels-last memory format. Under autocast the dense products follow autocast; the
    sampling is fp32.
    """
    batch, in_channels, height, width = x.shape
    out_channels = weight.shape[0]
    out_height, out_width = offset.shape[-2:]
    in_positions, out_positions = batch * height * width, batch * out_height * out_width
    pixels, corner_weights = bilinear_corners(offset.float(), height, width, stride=stride, padding=padding)
    sampling = csr_matrix(CORNERS, pixels, corner_weights, shape=(out_positions * TAPS, in_positions))
    x_rows = x.permute(0, 2, 3, 1).reshape(in_positions, in_channels)
    columns = sparse_matmul(sampling, x_rows).view(out_positions, TAPS * in_channels)
    # (C_out, C_in, ky, kx) → (C_out, ky·kx·C_in): the (tap, channel) order of the columns.
    weight_rows = weight.permute(0, 2, 3, 1).reshape(out_channels, TAPS * in_channels)
    out = linear(columns, weight_rows, bias)
    return out.view(batch, out_height, out_width, out_channels).permute(0, 3, 1, 2)


def bilinear_corners(
    offset: torch.Tensor, height: int, width: int, *, stride: int, padding: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each 3×3 tap samples, as the four bilinear corners of every sample point.

    offset: (N, 18, H_out, W_out) fp32. Returns ``(pixels, weights)``, both (N·H_out·W_out·9·4,)
    ordered (n, y_out, x_out, tap, corner): ``pixels`` are flat indices ``n·H·W + y·W + x`` into the
    input (clamped into range), ``weights`` the corner weights, zero where the corner lies outside
    the image — torchvision's and mmcv's rule: a point with y ≤ −1, y ≥ H, x ≤ −1 or x ≥ W samples
    nothing; otherwise each corner inside the image contributes.
    """
    batch, _, out_height, out_width = offset.shape
    device = offset.device
    deltas = offset.view(batch, TAPS, 2, out_height, out_width).permute(0, 3, 4, 1, 2)  # (N, Ho, Wo, 9, 2)
    tap_y = torch.arange(KERNEL_SIZE, device=device).repeat_interleave(KERNEL_SIZE)
    tap_x = torch.arange(KERNEL_SIZE, device=device).repeat(KERNEL_SIZE)
    base_y = torch.arange(out_height, device=device) * stride - padding
    base_x = torch.arange(out_width, device=device) * stride - padding
    # Integer grid position first, then the fractional offset: the same float sum as the kernels.
    y = (base_y.view(-1, 1, 1) + tap_y.view(1, 1, -1)).float() + deltas[..., 0]
    x = (base_x.view(1, -1, 1) + tap_x.view(1, 1, -1)).float() + deltas[..., 1]
    inside = (y > -1) & (y < height) & (x > -1) & (x < width)
    y_low, x_low = y.floor(), x.floor()
    frac_y, frac_x = y - y_low, x - x_low
    y_low, x_low = y_low.long(), x_low.long()

    corner_y = torch.stack((y_low, y_low, y_low + 1, y_low + 1), dim=-1)
    corner_x = torch.stack((x_low, x_low + 1, x_low, x_low + 1), dim=-1)
    weights = torch.stack(
        ((1 - frac_y) * (1 - frac_x), (1 - frac_y) * frac_x, frac_y * (1 - frac_x), frac_y * frac_x), dim=-1
    )
    valid = inside.unsqueeze(-1) & (corner_y >= 0) & (corner_y < height) & (corner_x >= 0) & (corner_x < width)
    image = torch.arange(batch, device=device).view(batch, 1, 1, 1, 1) * (height * width)
    pixels = image + corner_y.clamp(0, height - 1) * width + corner_x.clamp(0, width - 1)
    return pixels.reshape(-1), torch.where(valid, weights, 0.0).reshape(-1)
