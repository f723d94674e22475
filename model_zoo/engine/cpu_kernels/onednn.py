"""CPU matrix products on oneDNN: fully connected layers and per-head attention as 1×1 convolutions.

On CPU, ``F.linear``, ``bmm`` and the fused ``scaled_dot_product_attention`` kernel run their
fp32 GEMMs on MKL's sgemm, which on AMD processors takes its AVX2 path; oneDNN's convolutions use
AVX-512 on any x86 CPU that has it. A (M × K) · (K × N) product is a 1×1 convolution of a
channels-last image of M pixels with K channels, so it can run there instead (the box head's
products and the ``1111`` attention blocks; ``benchmarks/attention_memory.py --cpu-kernels``
times a block either way). The products and sums are the same; only their rounding order
differs. Other devices keep the plain ops. ``OneDNNLinear`` and ``OneDNNGeneralizedAttention`` are
the modules the inference pass swaps in for the model's ``nn.Linear`` box-head layers and attention
blocks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..attention import GeneralizedAttention

# Queries per attention chunk: the chunk's energies (heads × chunk × keys) stay in cache and the
# whole (queries × keys) matrix is never built. 256–384 were fastest for stage-3 sizes.
ATTENTION_QUERY_CHUNK = 256


def _rows_as_image(rows: torch.Tensor) -> torch.Tensor:
    """(M, K) rows → (1, K, M, 1): a channels-last image of M pixels with K channels (a view)."""
    num_rows, width = rows.shape
    return rows.contiguous().view(1, num_rows, 1, width).permute(0, 3, 1, 2)


def _image_as_rows(image: torch.Tensor) -> torch.Tensor:
    """(1, N, M, 1) channels-last conv output → (M, N) rows."""
    return image.permute(0, 2, 3, 1).reshape(image.shape[2], image.shape[1])


def linear(rows: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``rows @ weight.T + bias``: rows (M, K), weight (N, K), bias (N,) → (M, N)."""
    if rows.device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return F.linear(rows, weight, bias)
    return _image_as_rows(F.conv2d(_rows_as_image(rows), weight.view(*weight.shape, 1, 1), bias))


class OneDNNLinear(nn.Linear):
    """``nn.Linear`` (same parameters and state-dict keys) computed by ``linear`` above."""

    @classmethod
    def from_linear(cls, layer: nn.Linear) -> OneDNNLinear:
        """A layer sharing ``layer``'s parameters."""
        swapped = cls(layer.in_features, layer.out_features, bias=layer.bias is not None, device="meta")
        swapped.load_state_dict(layer.state_dict(), assign=True)
        return swapped

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)


class OneDNNGeneralizedAttention(GeneralizedAttention):
    """``GeneralizedAttention`` whose query–key–value products run as oneDNN chunks (``attention``)."""

    @classmethod
    def from_module(cls, block: GeneralizedAttention) -> OneDNNGeneralizedAttention:
        """A block sharing ``block``'s parameters."""
        with torch.device("meta"):
            swapped = cls(
                block.in_channels, num_heads=block.num_heads, attention_type=block.attention_type,
                kv_stride=block.kv_stride, position_magnitude=block.position_magnitude,
            )  # fmt: skip
        swapped.load_state_dict(block.state_dict(), assign=True)
        return swapped

    def attend(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        if query.device.type != "cpu":
            return super().attend(query, key, value)
        return attention(query, key, value)


def attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``softmax(query · keyᵀ) · value`` per head, scale 1, on CPU.

    query (n, M, L, E), key (n, M, S, E), value (n, M, S, d) → (n, L, M·d): for every query the
    heads' outputs side by side (channel m·d + i), the channels-last order of an (n, M·d, h, w) map.
    Each head is one group of a grouped 1×1 convolution whose weights are that head's keys (then
    values); queries go through in chunks of ``ATTENTION_QUERY_CHUNK``.
    """
    n, heads, num_queries, dim = query.shape
    num_keys, head_dim = key.shape[2], value.shape[3]
    query_rows = query.permute(0, 2, 1, 3).reshape(n, num_queries, heads * dim)  # (n, L, M·E)
    out = query.new_empty(n, num_queries, heads * head_dim, dtype=torch.result_type(query, value))
    for image in range(n):
        key_weight = key[image].reshape(heads * num_keys, dim, 1, 1)  # group m: S outputs from E inputs
        value_weight = value[image].transpose(1, 2).reshape(heads * head_dim, num_keys, 1, 1)
        for start in range(0, num_queries, ATTENTION_QUERY_CHUNK):
            chunk = query_rows[image, start : start + ATTENTION_QUERY_CHUNK]  # (Lc, M·E)
            energy = _image_as_rows(F.conv2d(_rows_as_image(chunk), key_weight, groups=heads))  # (Lc, M·S)
            weights = energy.view(-1, heads, num_keys).softmax(dim=-1).view(-1, heads * num_keys)
            mixed = F.conv2d(_rows_as_image(weights), value_weight, groups=heads)  # (1, M·d, Lc, 1)
            out[image, start : start + ATTENTION_QUERY_CHUNK] = _image_as_rows(mixed)
    return out
