"""GeneralizedAttention (Zhu et al. 2019), weight-compatible with mmcv's module, in named terms.

Shapes: n batch, C channels, M heads, d = C / M per-head dim; queries at every position of an
(h, w) map, keys/values at an (h_kv, w_kv) map subsampled by ``kv_stride`` (``x[..., ::s, ::s]``).

The 4-bit ``attention_type`` switches on terms of the energy between query (i, j) and key (u, v):

====  =====================  ===============================================
bit   term                   energy contribution
====  =====================  ===============================================
0     appearance–appearance  q_ij · k_uv
1     appearance–position    q_ij · (Px[j, v] + Py[i, u])
2     bias–appearance        appr_bias · k_uv           (query-independent)
3     bias–position          geom_bias · (Px[j, v] + Py[i, u])
====  =====================  ===============================================

Px / Py are linear projections of sinusoidal embeddings of the relative offsets j - s·v and
i - s·u, divided by √2. There is no 1/√d scaling; the softmax runs over all key positions,
padding included. Output: ``x + gamma * proj_conv(attention @ values)``.

Key-content and position terms are one dot product between an extended query
``[c_ij, bx_ij, by_ij]`` and an extended key ``[k_uv, onehot(v), onehot(u)]``, where
``c = q (bit 0) + appr_bias (bit 2)``, ``bx_ij[v] = g_ij · Px[j, v]``, ``by_ij[u] = g_ij · Py[i, u]``
and ``g = q (bit 1) + geom_bias (bit 3)``. So attention is plain multi-head attention with scale 1
over the extended query and key: one ``scaled_dot_product_attention`` call (fused kernels on
CUDA), and the (h·w) × (h_kv·w_kv) energy is never materialised. The attention weights of one
query, for display, come from :meth:`GeneralizedAttention.query_weights`, outside ``forward``.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

WAVE_LENGTH = 1000.0


class GeneralizedAttention(nn.Module):
    """Spatial self-attention block; parameter names equal mmcv's (checkpoint keys).

    Args:
        in_channels: C.
        num_heads: M; C must divide by it.
        attention_type: four '0'/'1' characters, see the module docstring.
        kv_stride: subsampling of keys and values.
        position_magnitude: multiplier of the relative offsets.
    """

    def __init__(
        self,
        in_channels: int,
        *,
        num_heads: int,
        attention_type: str,
        kv_stride: int,
        position_magnitude: float,
    ) -> None:
        super().__init__()
        if in_channels % num_heads:
            raise ValueError(f"in_channels {in_channels} is not divisible by num_heads {num_heads}")
        self.in_channels = in_channels
        self.attention_type = attention_type
        self.num_heads = num_heads
        self.head_dim = in_channels // num_heads
        self.position_dim = in_channels
        self.kv_stride = kv_stride
        self.position_magnitude = position_magnitude
        bits = [char == "1" for char in attention_type]
        self.appr_appr, self.appr_geom, self.bias_appr, self.bias_geom = bits
        self.query_independent = bits == [False, False, True, False]

        # Registration order follows mmcv so state_dict() lists keys in the same order.
        if self.bias_appr:
            self.appr_bias = nn.Parameter(torch.zeros(in_channels))
        if self.bias_geom:
            self.geom_bias = nn.Parameter(torch.zeros(in_channels))
        self.gamma = nn.Parameter(torch.zeros(1))
        if self.appr_appr or self.appr_geom:
            self.query_conv = nn.Conv2d(in_channels, in_channels, 1, bias=False)
        if self.appr_appr or self.bias_appr:
            self.key_conv = nn.Conv2d(in_channels, in_channels, 1, bias=False)
        self.value_conv = nn.Conv2d(in_channels, in_channels, 1, bias=False)
        if self.appr_geom or self.bias_geom:
            self.appr_geom_fc_x = nn.Linear(self.position_dim // 2, in_channels, bias=False)
            self.appr_geom_fc_y = nn.Linear(self.position_dim // 2, in_channels, bias=False)
        self.proj_conv = nn.Conv2d(in_channels, in_channels, 1, bias=True)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, num_heads={self.num_heads}, attention_type={self.attention_type!r}, kv_stride={self.kv_stride}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (Tensor[n, C, h, w]) → Tensor[n, C, h, w]."""
        n, channels, h, w = x.shape
        x_kv = x[:, :, :: self.kv_stride, :: self.kv_stride]
        values = self._heads(self.value_conv(x_kv))  # (n, M, h_kv*w_kv, d)
        if self.query_independent:
            # One softmax over keys shared by every query: a global-context vector, broadcast.
            weights = self.bias_appearance_weights(x_kv)  # (n, M, 1, h_kv*w_kv)
            out = (weights @ values).permute(0, 1, 3, 2).reshape(n, channels, 1, 1)
        else:
            query_ext, key_ext = self.extended_query_key(x, x_kv)  # (n, M, hw, E), (n, M, hw_kv, E)
            out = self.attend(query_ext, key_ext, values)  # (n, hw, C)
            out = out.view(n, h, w, channels).permute(0, 3, 1, 2)  # (n, C, h, w), channels-last strides
        projected: torch.Tensor = self.proj_conv(out)
        return x + self.gamma * projected

    def attend(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """softmax(query · keyᵀ) · value per head with scale 1, as one ``scaled_dot_product_attention``.

        query (n, M, L, E), key (n, M, S, E), value (n, M, S, d) → (n, L, M·d): per query the heads'
        outputs side by side (channel m·d + i), the channels-last order of an (n, M·d, h, w) map.
        """
        # Fused kernels want one head dim for q, k and v: zero-pad v from d to E, then drop the padding.
        n, heads, num_queries, head_dim = *query.shape[:3], value.shape[-1]
        padded = F.pad(value, (0, query.size(-1) - head_dim))
        out = F.scaled_dot_product_attention(query, key, padded, scale=1.0)[..., :head_dim]
        return out.transpose(1, 2).reshape(n, num_queries, heads * head_dim)

    def query_weights(self, x: torch.Tensor, query: tuple[int, int]) -> torch.Tensor:
        """Attention weights of the query at cell ``query`` = (i, j) for input x (Tensor[n, C, h, w]):
        Tensor[n, M, h_kv, w_kv], each head summing to 1 over the keys (padding included).

        The same softmax as ``forward``, for one query row; nothing is stored on the module, so this
        may run while other threads run ``forward``. Query-independent types ('0010') give the same
        weights for every query.
        """
        h, w = x.shape[2:]
        i, j = query
        if not (0 <= i < h and 0 <= j < w):
            raise ValueError(f"query cell {query} is outside the {h}x{w} query map")
        x_kv = x[:, :, :: self.kv_stride, :: self.kv_stride]
        h_kv, w_kv = x_kv.shape[2:]
        if self.query_independent:
            weights = self.bias_appearance_weights(x_kv)  # (n, M, 1, h_kv*w_kv)
        else:
            query_ext, key_ext = self.extended_query_key(x, x_kv)
            row = query_ext[:, :, i * w + j : i * w + j + 1]  # (n, M, 1, E)
            weights = (row @ key_ext.transpose(2, 3)).softmax(dim=-1)
        return weights.reshape(x.size(0), self.num_heads, h_kv, w_kv)

    def _heads(self, feature: torch.Tensor) -> torch.Tensor:
        """(n, C, h, w) → (n, M, h*w, d); channel c is head c // d, dim c % d.

        Goes through (n, h, w, C), which is free for channels-last inputs.
        """
        n, _, h, w = feature.shape
        return feature.permute(0, 2, 3, 1).reshape(n, h * w, self.num_heads, self.head_dim).transpose(1, 2)

    def _head_vector(self, vector: torch.Tensor) -> torch.Tensor:
        """(C,) → (1, M, 1, d)."""
        return vector.view(1, self.num_heads, 1, self.head_dim)

    # --- the four terms, as the pieces of the extended query and key --------------------------

    def content_query(self, queries: torch.Tensor | None) -> torch.Tensor | None:
        """Coefficient of k_uv: q (appearance–appearance) + appr_bias (bias–appearance)."""
        terms = [queries] if self.appr_appr and queries is not None else []
        if self.bias_appr:
            terms.append(self._head_vector(self.appr_bias))
        return sum(terms[1:], terms[0]) if terms else None

    def geometry_query(self, queries: torch.Tensor | None) -> torch.Tensor | None:
        """Coefficient of Px + Py: q (appearance–position) + geom_bias (bias–position)."""
        terms = [queries] if self.appr_geom and queries is not None else []
        if self.bias_geom:
            terms.append(self._head_vector(self.geom_bias))
        return sum(terms[1:], terms[0]) if terms else None

    def bias_appearance_weights(self, x_kv: torch.Tensor) -> torch.Tensor:
        """Query-independent attention ('0010'): softmax_uv(appr_bias · k_uv), (n, M, 1, h_kv*w_kv)."""
        keys = self._heads(self.key_conv(x_kv))  # (n, M, hw_kv, d)
        energy = self._head_vector(self.appr_bias) @ keys.transpose(2, 3)
        return energy.softmax(dim=3)

    def extended_query_key(self, x: torch.Tensor, x_kv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The extended query (n, M, h*w, E) and key (n, M, h_kv*w_kv, E) whose dot product is the energy."""
        n, _, h, w = x.shape
        h_kv, w_kv = x_kv.shape[2:]
        queries = self._heads(self.query_conv(x)) if (self.appr_appr or self.appr_geom) else None
        query_parts: list[torch.Tensor] = []
        key_parts: list[torch.Tensor] = []
        content = self.content_query(queries)
        if content is not None:
            query_parts.append(content.expand(n, -1, h * w, -1))
            key_parts.append(self._heads(self.key_conv(x_kv)))
        geometry = self.geometry_query(queries)
        if geometry is not None:
            pos_x, pos_y = self.position_terms(h, w, h_kv, w_kv, x.dtype, x.device)
            geometry = geometry.expand(n, -1, h * w, -1).reshape(n, self.num_heads, h, w, self.head_dim)
            bias_x = torch.einsum("nmhwd,mwvd->nmhwv", geometry, pos_x).reshape(n, self.num_heads, h * w, w_kv)
            bias_y = torch.einsum("nmhwd,mhud->nmhwu", geometry, pos_y).reshape(n, self.num_heads, h * w, h_kv)
            query_parts += [bias_x, bias_y]
            # Key (u, v) is flattened as u * w_kv + v: one-hot codes select bias_x[v] and bias_y[u].
            key_parts.append(key_position_codes(h_kv, w_kv, x.dtype, x.device).expand(n, self.num_heads, -1, -1))
        return torch.cat(query_parts, dim=-1), torch.cat(key_parts, dim=-1)

    def position_terms(
        self, h: int, w: int, h_kv: int, w_kv: int, dtype: torch.dtype, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Px (M, w, w_kv, d) and Py (M, h, h_kv, d): projected relative-position embeddings / √2."""
        embed_x = relative_position_embedding(w, w_kv, self.kv_stride, self.position_magnitude, self.position_dim, dtype, device)
        embed_y = relative_position_embedding(h, h_kv, self.kv_stride, self.position_magnitude, self.position_dim, dtype, device)
        pos_x = self.appr_geom_fc_x(embed_x).view(w, w_kv, self.num_heads, self.head_dim).permute(2, 0, 1, 3)
        pos_y = self.appr_geom_fc_y(embed_y).view(h, h_kv, self.num_heads, self.head_dim).permute(2, 0, 1, 3)
        return pos_x / math.sqrt(2), pos_y / math.sqrt(2)


@functools.lru_cache(maxsize=64)
def relative_position_embedding(
    length: int,
    length_kv: int,
    kv_stride: int,
    magnitude: float,
    dim: int,
    dtype: torch.dtype,
    device: torch.device,
) -> torch.Tensor:
    """Sinusoidal embedding of offsets ``(i - kv_stride * j) * magnitude``, Tensor[length, length_kv, dim/2].

    The first dim/4 channels are sines, the next dim/4 cosines (two blocks, not interleaved),
    of offset / 1000^(4k/dim) for k < dim/4. Cached per shape: every block of a stage reuses it.
    """
    with torch.inference_mode(False):  # a cached tensor must stay usable outside inference mode
        return _relative_position_embedding(length, length_kv, kv_stride, magnitude, dim, dtype, device)


def _relative_position_embedding(
    length: int, length_kv: int, kv_stride: int, magnitude: float, dim: int, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    query_idx = torch.linspace(0, length - 1, length).to(device, dtype).view(length, 1)
    key_idx = torch.linspace(0, length_kv - 1, length_kv).to(device, dtype).view(length_kv, 1) * kv_stride
    offsets = (query_idx.unsqueeze(1) - key_idx.unsqueeze(0)) * magnitude  # (length, length_kv, 1)
    feat_range = torch.arange(0, dim / 4, device=device)
    dim_mat = (torch.tensor([WAVE_LENGTH], device=device) ** ((4.0 / dim) * feat_range)).view(1, 1, -1)
    angles = offsets / dim_mat
    return torch.cat([angles.sin(), angles.cos()], dim=2).to(dtype)


@functools.lru_cache(maxsize=64)
def key_position_codes(h_kv: int, w_kv: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """One-hot codes of key (u, v), flattened u * w_kv + v: Tensor[h_kv*w_kv, w_kv + h_kv] = [onehot(v), onehot(u)]."""
    with torch.inference_mode(False):  # a cached tensor must stay usable outside inference mode
        onehot_x = torch.eye(w_kv, dtype=dtype, device=device).repeat(h_kv, 1)
        onehot_y = torch.eye(h_kv, dtype=dtype, device=device).repeat_interleave(w_kv, dim=0)
        return torch.cat([onehot_x, onehot_y], dim=1)
