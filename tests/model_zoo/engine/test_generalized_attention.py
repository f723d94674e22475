"""Our extended query/key formulation of GeneralizedAttention against a literal transcription of the
energy: the plain block (one SDPA call) and the oneDNN block the fast CPU kernels swap in."""

import math

import pytest
import torch

from model_zoo.engine.attention import GeneralizedAttention, relative_position_embedding
from model_zoo.engine.cpu_kernels import onednn

BLOCKS = {"sdpa": lambda module: module, "onednn": onednn.OneDNNGeneralizedAttention.from_module}


def literal_energy(module: GeneralizedAttention, x: torch.Tensor) -> torch.Tensor:
    """energy[n, m, i, j, u, v] = Σ of the enabled terms, float64, written out with loops' shapes."""
    n, c, h, w = x.shape
    m, d, s = module.num_heads, module.head_dim, module.kv_stride
    x_kv = x[:, :, ::s, ::s]
    hk, wk = x_kv.shape[2:]
    energy = torch.zeros(n, m, h, w, hk, wk, dtype=torch.float64)
    q = module.query_conv(x).double().view(n, m, d, h, w) if hasattr(module, "query_conv") else None
    k = module.key_conv(x_kv).double().view(n, m, d, hk, wk) if hasattr(module, "key_conv") else None
    if module.appr_appr:
        energy += torch.einsum("nmdhw,nmduv->nmhwuv", q, k)
    if module.bias_appr:
        energy += torch.einsum("md,nmduv->nmuv", module.appr_bias.double().view(m, d), k)[:, :, None, None]
    if module.appr_geom or module.bias_geom:
        ex = relative_position_embedding(w, wk, s, module.position_magnitude, module.position_dim, x.dtype, x.device)
        ey = relative_position_embedding(h, hk, s, module.position_magnitude, module.position_dim, x.dtype, x.device)
        px = (module.appr_geom_fc_x(ex).double() / math.sqrt(2)).view(w, wk, m, d)
        py = (module.appr_geom_fc_y(ey).double() / math.sqrt(2)).view(h, hk, m, d)
        if module.appr_geom:
            energy += torch.einsum("nmdhw,wvmd->nmhwv", q, px)[:, :, :, :, None, :]
            energy += torch.einsum("nmdhw,humd->nmhwu", q, py)[:, :, :, :, :, None]
        if module.bias_geom:
            g = module.geom_bias.double().view(m, d)
            energy += torch.einsum("md,wvmd->mwv", g, px)[None, :, None, :, None, :]
            energy += torch.einsum("md,humd->mhu", g, py)[None, :, :, None, :, None]
    return energy


def literal_attention(module: GeneralizedAttention, x: torch.Tensor) -> torch.Tensor:
    """The block's output from the literal energy, softmax over keys."""
    n, c, h, w = x.shape
    m, d, s = module.num_heads, module.head_dim, module.kv_stride
    x_kv = x[:, :, ::s, ::s]
    hk, wk = x_kv.shape[2:]
    attention = literal_energy(module, x).view(n, m, h * w, hk * wk).softmax(-1)
    v = module.value_conv(x_kv).double().view(n, m, d, hk * wk).transpose(2, 3)
    out = (attention @ v).transpose(2, 3).reshape(n, c, h, w)
    proj = torch.nn.functional.conv2d(out, module.proj_conv.weight.double(), module.proj_conv.bias.double())
    return x.double() + module.gamma.double() * proj


def random_block(attention_type: str, seed: int, channels: int = 32, heads: int = 4) -> GeneralizedAttention:
    torch.manual_seed(seed)
    module = GeneralizedAttention(channels, num_heads=heads, attention_type=attention_type, kv_stride=2, position_magnitude=1.0)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.normal_(0, 0.2)
    return module


@pytest.mark.parametrize("block", list(BLOCKS))
@pytest.mark.parametrize(
    ("attention_type", "size"),
    [(t, (7, 9)) for t in ["1111", "0010", "1000", "0100", "0001", "0011", "1010", "0110"]]
    # 620 queries: on CPU two full oneDNN chunks of 256 queries and a partial one
    + [("1111", (20, 31))],
)
def test_matches_literal_energy(attention_type, size, block):
    module = BLOCKS[block](random_block(attention_type, seed=0))
    x = torch.randn(2, 32, *size)  # odd sizes: kv map is ceil(h/2) × ceil(w/2)
    with torch.inference_mode():
        ours = module(x)
        literal = literal_attention(module, x)
    assert ours.shape == x.shape
    torch.testing.assert_close(ours.double(), literal, rtol=1e-5, atol=1e-5)


def test_query_chunks_cover_the_large_case():
    assert 2 * onednn.ATTENTION_QUERY_CHUNK < 20 * 31 < 3 * onednn.ATTENTION_QUERY_CHUNK


def test_0010_is_query_independent_global_context():
    torch.manual_seed(1)
    module = GeneralizedAttention(16, num_heads=2, attention_type="0010", kv_stride=2, position_magnitude=1.0)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.normal_(0, 0.3)
    x = torch.randn(1, 16, 6, 6)
    with torch.inference_mode():
        delta = module(x) - x
    # the same vector is added at every position
    assert torch.allclose(delta, delta[:, :, :1, :1].expand_as(delta), atol=1e-6)


def test_position_embedding_is_sin_block_then_cos_block():
    emb = relative_position_embedding(3, 2, 2, 1.0, 8, torch.float32, torch.device("cpu"))
    assert emb.shape == (3, 2, 4)
    # offset (i=2, j=1) = 2 - 2·1 = 0 → sin 0 = 0 then cos 0 = 1
    assert emb[2, 1].tolist() == [0.0, 0.0, 1.0, 1.0]
    # offset (i=1, j=0) = 1; dims: 1000^(4k/8) for k = 0, 1 → 1, 31.62...
    assert emb[1, 0, 0].item() == pytest.approx(math.sin(1.0))
    assert emb[1, 0, 3].item() == pytest.approx(math.cos(1 / 1000**0.5), rel=1e-6)


def test_parameter_names_follow_mmcv_per_type():
    full = GeneralizedAttention(16, num_heads=2, attention_type="1111", kv_stride=2, position_magnitude=1.0)
    saliency = GeneralizedAttention(16, num_heads=2, attention_type="0010", kv_stride=2, position_magnitude=1.0)
    assert list(full.state_dict()) == [
        "appr_bias", "geom_bias", "gamma", "query_conv.weight", "key_conv.weight", "value_conv.weight",
        "appr_geom_fc_x.weight", "appr_geom_fc_y.weight", "proj_conv.weight", "proj_conv.bias",
    ]  # fmt: skip
    assert list(saliency.state_dict()) == [
        "appr_bias", "gamma", "key_conv.weight", "value_conv.weight", "proj_conv.weight", "proj_conv.bias",
    ]  # fmt: skip


@pytest.mark.parametrize("attention_type", ["1111", "0010", "0100"])
def test_query_weights_are_the_literal_softmax_row_of_one_query(attention_type):
    module = random_block(attention_type, seed=2)
    x = torch.randn(2, 32, 7, 9)
    with torch.inference_mode():
        energy = literal_energy(module, x)  # (n, M, 7, 9, 4, 5)
        rows = []
        for query in [(0, 0), (5, 6), (6, 8)]:
            weights = module.query_weights(x, query)
            assert weights.shape == (2, 4, 4, 5)
            literal = energy[:, :, query[0], query[1]].reshape(2, 4, 20).softmax(-1).view(2, 4, 4, 5)
            torch.testing.assert_close(weights.double(), literal, rtol=1e-5, atol=1e-6)
            rows.append(weights)
    assert (torch.equal(rows[0], rows[1])) == (attention_type == "0010")  # only 0010 is query-independent
    with pytest.raises(ValueError, match="outside the 7x9 query map"):
        module.query_weights(x, (7, 0))


def test_the_onednn_block_keeps_the_parameters_and_keys():
    module = random_block("1111", seed=3)
    swapped = onednn.OneDNNGeneralizedAttention.from_module(module)
    assert list(swapped.state_dict()) == list(module.state_dict())
    assert all(a.data_ptr() == b.data_ptr() for a, b in zip(swapped.parameters(), module.parameters()))
