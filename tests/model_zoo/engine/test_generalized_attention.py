"""Our extended query/key formulation of GeneralizedAttention against a literal transcription of the energy."""

import math

import pytest
import torch

from model_zoo.engine import onednn
from model_zoo.engine.attention import AttentionProbe, GeneralizedAttention, relative_position_embedding


def literal_attention(module: GeneralizedAttention, x: torch.Tensor) -> torch.Tensor:
    """energy[(i,j),(u,v)] = Σ of the enabled terms, softmax over keys, written out with loops' shapes."""
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
    if module.uses_position:
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
    attention = energy.view(n, m, h * w, hk * wk).softmax(-1)
    v = module.value_conv(x_kv).double().view(n, m, d, hk * wk).transpose(2, 3)
    out = (attention @ v).transpose(2, 3).reshape(n, c, h, w)
    proj = torch.nn.functional.conv2d(out, module.proj_conv.weight.double(), module.proj_conv.bias.double())
    return x.double() + module.gamma.double() * proj


@pytest.mark.parametrize(
    ("attention_type", "size"),
    [(t, (7, 9)) for t in ["1111", "0010", "1000", "0100", "0001", "0011", "1010", "0110"]]
    # 620 queries: on CPU two full oneDNN chunks of 256 queries and a partial one
    + [("1111", (20, 31))],
)
def test_matches_literal_energy(attention_type, size):
    torch.manual_seed(0)
    module = GeneralizedAttention(32, num_heads=4, attention_type=attention_type, kv_stride=2, position_magnitude=1.0)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.normal_(0, 0.2)
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


@pytest.mark.parametrize("attention_type", ["1111", "0010"])
def test_probe_records_the_forward_attention_of_one_query(attention_type):
    torch.manual_seed(2)
    module = GeneralizedAttention(32, num_heads=4, attention_type=attention_type, kv_stride=2, position_magnitude=1.0)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.normal_(0, 0.2)
    x = torch.randn(1, 32, 7, 9)
    maps = []
    for query in [(0, 0), (5, 6)]:
        module.probe = AttentionProbe(query=query)
        with torch.inference_mode():
            module(x)
        probe = module.probe
        assert probe.weights.shape == (1, 4, 4, 5) and probe.key_shape == (4, 5) and probe.query_shape == (7, 9)
        torch.testing.assert_close(probe.weights.sum(dim=(2, 3)), torch.ones(1, 4))
        maps.append(probe.weights)
    module.probe = None
    if attention_type == "0010":
        torch.testing.assert_close(maps[0], maps[1])
    else:
        assert not torch.allclose(maps[0], maps[1])
