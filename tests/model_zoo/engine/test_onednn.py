"""GEMMs routed through oneDNN 1×1 convolutions against plain float64 products."""

import torch
import torch.nn.functional as F

from model_zoo.engine import onednn
from model_zoo.engine.attention import sdpa_attention


def test_linear_matches_a_float64_product() -> None:
    generator = torch.Generator().manual_seed(0)
    rows, weight, bias = torch.randn(37, 50, generator=generator), torch.randn(11, 50, generator=generator), torch.randn(11)
    expected = F.linear(rows.double(), weight.double(), bias.double())
    got = onednn.linear(rows, weight, bias)
    assert got.shape == (37, 11) and got.is_contiguous()
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(onednn.linear(rows.t().contiguous().t(), weight).double(), expected - bias.double(), rtol=1e-5, atol=1e-5)


def test_linear_module_keeps_nn_linear_parameters() -> None:
    layer = onednn.Linear(6, 4)
    assert list(layer.state_dict()) == ["weight", "bias"]
    x = torch.randn(3, 6)
    torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias))


def test_onednn_and_sdpa_attention_agree() -> None:
    """The CPU path (oneDNN chunks) and the CUDA path (one SDPA call), both run here on CPU."""
    generator = torch.Generator().manual_seed(4)
    query = torch.randn(2, 3, 600, 21, generator=generator)  # 600 queries: several chunks, the last partial
    key = torch.randn(2, 3, 40, 21, generator=generator)
    value = torch.randn(2, 3, 40, 5, generator=generator)
    expected = (query.double() @ key.double().transpose(2, 3)).softmax(-1) @ value.double()  # (n, M, L, d)
    expected = expected.transpose(1, 2).reshape(2, 600, 15)
    torch.testing.assert_close(onednn.attention(query, key, value).double(), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sdpa_attention(query, key, value).double(), expected, rtol=1e-5, atol=1e-5)
