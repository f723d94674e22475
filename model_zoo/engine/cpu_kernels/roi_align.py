"""Aligned RoIAlign (average pooling, mmcv's / torchvision's arithmetic) as one sparse product.

Each output bin averages ``grid_h × grid_w`` bilinear samples of the feature map, so a bin is a
weighted sum of feature-map pixels: with the level's features as rows ``X: (N·H·W, C)``
(channels-last, a view) the pooled features of all RoIs are ``S · X`` for a sparse ``S`` with
``grid_h · grid_w · 4`` entries per bin (see ``sparse.py``). The result comes out channels-last,
(K, S, S, C), which the box head reads without a transpose once ``inference_pass`` has permuted its first fc.

torchvision's CPU kernel loops over channels of an NCHW map (and first copies a channels-last
map to NCHW); this runs on MKL with every thread. Sample positions and corner weights follow the
kernel's float32 arithmetic step by step; only the order of the final sum differs (float32
rounding). ``SparseRoIAlign`` is the module the inference pass swaps in for the RoI head's
``torchvision.ops.RoIAlign`` layers.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torchvision.ops import RoIAlign

from .sparse import CORNERS, csr_matrix, sparse_matmul


class SparseRoIAlign(RoIAlign):
    """Aligned ``torchvision.ops.RoIAlign`` computed by ``sparse_roi_align`` on CPU, where its
    output is channels-last."""

    @classmethod
    def from_module(cls, layer: RoIAlign) -> SparseRoIAlign:
        if not layer.aligned:
            raise ValueError("only aligned RoIAlign (aligned=True, as mmdet's) has a sparse version")
        return cls(layer.output_size, layer.spatial_scale, layer.sampling_ratio, aligned=True)

    def forward(self, feature: torch.Tensor, rois: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        if feature.device.type != "cpu" or not isinstance(rois, torch.Tensor):
            return super().forward(feature, rois)
        size = self.output_size if isinstance(self.output_size, int) else self.output_size[0]
        return sparse_roi_align(feature, rois, output_size=size, spatial_scale=self.spatial_scale, sampling_ratio=self.sampling_ratio)


def sparse_roi_align(
    feature: torch.Tensor, rois: torch.Tensor, *, output_size: int, spatial_scale: float, sampling_ratio: int
) -> torch.Tensor:
    """Aligned RoIAlign of ``rois`` on one CPU feature map.

    feature: (N, C, H, W); rois: (K, 5) of (image index, x1, y1, x2, y2) in input pixels;
    spatial_scale: feature pixels per input pixel (1 / stride); sampling_ratio: samples per bin
    and axis, 0 for mmdet's adaptive ``ceil(roi size / output_size)``. Returns (K, C, S, S) with
    S = output_size, a channels-last tensor (memory order (K, S, S, C)).
    """
    batch, channels, height, width = feature.shape
    sampling = roi_sampling_matrix(
        rois.float(), (batch, height, width), output_size=output_size, spatial_scale=spatial_scale,
        sampling_ratio=sampling_ratio,
    )  # fmt: skip
    pooled = sparse_matmul(sampling, feature.permute(0, 2, 3, 1).reshape(batch * height * width, channels))
    return pooled.view(rois.shape[0], output_size, output_size, channels).permute(0, 3, 1, 2)


def roi_sampling_matrix(
    rois: torch.Tensor, feature_shape: tuple[int, int, int], *, output_size: int, spatial_scale: float, sampling_ratio: int
) -> torch.Tensor:
    """The sparse (K·S·S × N·H·W) matrix whose row (roi, bin_y, bin_x) averages that bin's samples.

    rois: (K, 5) fp32 as in ``roi_align``; feature_shape: (N, H, W). A bin's row holds
    grid_y · grid_x · 4 entries: each sample's four bilinear corners, weight / (grid_y · grid_x).
    """
    batch, height, width = feature_shape
    size = output_size
    # aligned=True: pixel centres sit at +0.5, so shift by half a pixel; no minimum RoI size.
    start_x, start_y = rois[:, 1] * spatial_scale - 0.5, rois[:, 2] * spatial_scale - 0.5
    roi_width = (rois[:, 3] * spatial_scale - 0.5) - start_x
    roi_height = (rois[:, 4] * spatial_scale - 0.5) - start_y
    grid_y = _grid_size(roi_height, size, sampling_ratio)
    grid_x = _grid_size(roi_width, size, sampling_ratio)
    along_y = _axis_samples(start_y, roi_height, grid_y, height, size)
    along_x = _axis_samples(start_x, roi_width, grid_x, width, size)
    image_offset = rois[:, 0].long() * (height * width)
    per_bin = grid_y * grid_x * CORNERS  # (K,) entries in each of the roi's S·S rows
    roi_starts = torch.cumsum(per_bin * size * size, 0) - per_bin * size * size
    nnz = int(per_bin.sum().item()) * size * size
    columns = torch.empty(nnz, dtype=torch.long)
    values = torch.empty(nnz, dtype=torch.float32)
    # RoIs with the same grid build their entries together, written at their place in row order.
    for rows_y, rows_x in torch.unique(torch.stack((grid_y, grid_x), 1), dim=0).tolist():
        if rows_y == 0 or rows_x == 0:
            continue  # an empty RoI (x2 < x1 after the shift) pools to zero, as in the kernels
        members = ((grid_y == rows_y) & (grid_x == rows_x)).nonzero().squeeze(1)
        y = along_y.take(members, rows_y)  # (m, S, gy) each
        x = along_x.take(members, rows_x)
        # entry order (roi, bin_y, bin_x, sample_y, sample_x, corner) with corners (ll, lh, hl, hh)
        pixel_y = torch.stack((y.low, y.low, y.high, y.high), -1)[:, :, None, :, None, :]
        pixel_x = torch.stack((x.low, x.high, x.low, x.high), -1)[:, None, :, None, :, :]
        weight_y = torch.stack((y.weight_low, y.weight_low, y.weight_high, y.weight_high), -1)[:, :, None, :, None, :]
        weight_x = torch.stack((x.weight_low, x.weight_high, x.weight_low, x.weight_high), -1)[:, None, :, None, :, :]
        entries = size * size * rows_y * rows_x * CORNERS
        place = (roi_starts[members].view(-1, 1) + torch.arange(entries).view(1, -1)).view(-1)
        columns[place] = (image_offset[members].view(-1, 1, 1, 1, 1, 1) + pixel_y * width + pixel_x).reshape(-1)
        values[place] = (weight_y * weight_x / float(rows_y * rows_x)).reshape(-1)
    row_lengths = per_bin.repeat_interleave(size * size)
    return csr_matrix(row_lengths, columns, values, shape=(rois.shape[0] * size * size, batch * height * width))


def _grid_size(roi_size: torch.Tensor, output_size: int, sampling_ratio: int) -> torch.Tensor:
    """Samples per bin along one axis: (K,) int64; ``ceil(roi size / output size)`` if adaptive."""
    if sampling_ratio > 0:
        return torch.full_like(roi_size, sampling_ratio, dtype=torch.long)
    return torch.ceil(roi_size / output_size).long().clamp(min=0)


class AxisSamples(NamedTuple):
    """The two interpolation rows (or columns) of every sample along one axis, (K, S, G) each."""

    low: torch.Tensor
    high: torch.Tensor
    weight_low: torch.Tensor
    weight_high: torch.Tensor

    def take(self, rois: torch.Tensor, grid: int) -> AxisSamples:
        return AxisSamples(*(part[rois, :, :grid] for part in self))


def _axis_samples(start: torch.Tensor, roi_size: torch.Tensor, grid: torch.Tensor, length: int, size: int) -> AxisSamples:
    """Sample coordinates ``start + b·bin + (i + ½)·bin / grid`` of bin b, sample i, and their two
    interpolation pixels with weights, along one axis of ``length`` pixels; samples beyond ``grid``
    (padding up to the largest grid) are computed but never used. Zero weights outside the map."""
    largest = max(int(grid.max().item()), 1)
    bin_size = (roi_size / size).view(-1, 1, 1)
    bins = torch.arange(size, dtype=torch.float32).view(1, -1, 1)
    samples = torch.arange(largest, dtype=torch.float32).view(1, 1, -1)
    coord = (start.view(-1, 1, 1) + bins * bin_size) + (samples + 0.5) * bin_size / grid.view(-1, 1, 1).clamp(min=1)
    outside = (coord < -1.0) | (coord > length)
    coord = coord.clamp(min=0)
    low = coord.floor().long()
    at_edge = low >= length - 1
    low = torch.where(at_edge, length - 1, low)
    high = torch.where(at_edge, length - 1, low + 1)
    frac = torch.where(at_edge, 0.0, coord - low)
    return AxisSamples(low, high, torch.where(outside, 0.0, 1 - frac), torch.where(outside, 0.0, frac))
