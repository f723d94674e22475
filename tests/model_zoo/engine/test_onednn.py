"""GEMMs routed through oneDNN 1×1 convolutions against plain float64 products."""

import torch
import torch.nn.functional as F
from torch import nn

from model_zoo.engine.attention import GeneralizedAttention
from model_zoo.engine.cpu_kernels import onednn


def test_linear_matches_a_float64_product() -> None:
    generator = torch.Generator().manual_seed(0)
    rows, weight, bias = torch.randn(37, 50, generator=generator), torch.randn(11, 50, generator=generator), torch.randn(11)
    expected = F.linear(rows.double(), weight.double(), bias.double())
    got = onednn.linear(rows, weight, bias)
    assert got.shape == (37, 11) and got.is_contiguous()
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(onednn.linear(rows.t().contiguous().t(), weight).double(), expected - bias.double(), rtol=1e-5, atol=1e-5)


def test_linear_module_shares_the_nn_linear_parameters() -> None:
    layer = nn.Linear(6, 4)
    swapped = onednn.OneDNNLinear.from_linear(layer)
    assert list(swapped.state_dict()) == ["weight", "bias"]
    assert swapped.weight.data_ptr() == layer.weight.data_ptr() and swapped.bias.data_ptr() == layer.bias.data_ptr()
    x = torch.randn(3, 6)
    torch.testing.assert_close(swapped(x), F.linear(x, layer.weight, layer.bias))


def test_onednn_and_sdpa_attention_agree() -> None:
    """The fast CPU path (oneDNN chunks) and the portable one (one SDPA call, as CUDA runs it)."""
    generator = torch.Generator().manual_seed(4)
    query = torch.randn(2, 3, 600, 21, generator=generator)  # 600 queries: several chunks, the last partial
    key = torch.randn(2, 3, 40, 21, generator=generator)
    value = torch.randn(2, 3, 40, 5, generator=generator)
    expected = (query.double() @ key.double().transpose(2, 3)).softmax(-1) @ value.double()  # (n, M, L, d)
    expected = expected.transpose(1, 2).reshape(2, 600, 15)
    block = GeneralizedAttention(15, num_heads=3, attention_type="1111", kv_stride=2, position_magnitude=1.0)
    torch.testing.assert_close(onednn.attention(query, key, value).double(), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(block.attend(query, key, value).double(), expected, rtol=1e-5, atol=1e-5)
