"""Each token mixer and FFN against a plain formulation written here: explicit softmax(QK^T / sqrt(d)) V."""

import collections
import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from shunted_lab.models import FFNS, build_mixer
from shunted_lab.models.mixers.pvt import SpatialReductionAttention
from shunted_lab.models.mixers.shunted import ShuntedAttention
from shunted_lab.models.mixers.swin import ShiftedWindowAttention
from shunted_lab.models.mixers.vit import GlobalAttention
from shunted_lab.models.reference import Attention as SeedAttention
from shunted_lab.models.reference import Mlp as SeedMlp


def explicit_attention(q, k, v, bias=None):
    """q (B, h, N, d), k/v (B, h, M, d); bias broadcastable to (B, h, N, M)."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if bias is not None:
        scores = scores + bias
    return scores.softmax(-1) @ v


def heads(x, h):
    B, N, C = x.shape
    return x.reshape(B, N, h, C // h).permute(0, 2, 1, 3)


def unheads(x):
    B, h, N, d = x.shape
    return x.permute(0, 2, 1, 3).reshape(B, N, h * d)


def randomize(module):
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.2)
    return module.eval()


def assert_close(a, b, rtol=1e-5):
    assert a.shape == b.shape
    assert (a - b).abs().max() <= rtol * b.abs().max() + 1e-6


@pytest.mark.parametrize("hw", [(8, 8), (6, 10)])
def test_global_attention_matches_explicit(hw):
    m = randomize(GlobalAttention(32, 4))
    x = torch.randn(2, hw[0] * hw[1], 32)
    q, k, v = m.qkv(x).chunk(3, dim=-1)
    expected = m.proj(unheads(explicit_attention(heads(q, 4), heads(k, 4), heads(v, 4))))
    assert_close(m(x, hw), expected)


@pytest.mark.parametrize("hw", [(8, 8), (9, 7)])
@pytest.mark.parametrize("linear", [False, True])
def test_spatial_reduction_attention_matches_explicit(hw, linear):
    m = randomize(SpatialReductionAttention(32, 2, sr_ratio=2, linear=linear))
    x = torch.randn(2, hw[0] * hw[1], 32)
    x_map = x.transpose(1, 2).reshape(2, 32, *hw)
    if linear:
        reduced = F.gelu(m.norm(m.sr(F.adaptive_avg_pool2d(x_map, 7)).flatten(2).transpose(1, 2)))
    else:
        reduced = m.norm(m.sr(x_map).flatten(2).transpose(1, 2))
    k, v = m.kv(reduced).chunk(2, dim=-1)
    expected = m.proj(unheads(explicit_attention(heads(m.q(x), 2), heads(k, 2), heads(v, 2))))
    assert_close(m(x, hw), expected)


def swin_explicit(m: ShiftedWindowAttention, x, hw):
    """Global attention over the map, restricted to each token's (shifted) window and region."""
    H, W = hw
    ws, h = m.window_size, m.num_heads
    shift = ws // 2 if m.shift and min(H, W) > ws else 0
    Hp, Wp = math.ceil(H / ws) * ws, math.ceil(W / ws) * ws
    rows, cols = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    rows, cols = (rows.flatten() - shift) % Hp, (cols.flatten() - shift) % Wp  # position after the roll

    def region(c, size):
        return torch.zeros_like(c) if not shift else (c >= size - ws).long() + (c >= size - shift).long()

    same_window = ((rows // ws)[:, None] == (rows // ws)[None]) & ((cols // ws)[:, None] == (cols // ws)[None])
    same_region = (region(rows, Hp)[:, None] == region(rows, Hp)[None]) & (
        region(cols, Wp)[:, None] == region(cols, Wp)[None]
    )
    dh = (rows % ws)[:, None] - (rows % ws)[None] + ws - 1
    dw = (cols % ws)[:, None] - (cols % ws)[None] + ws - 1
    bias = m.relative_position_bias_table[dh * (2 * ws - 1) + dw].permute(2, 0, 1)  # h, N, N
    bias = bias.masked_fill(~(same_window & same_region), float("-inf"))
    q, k, v = m.qkv(x).chunk(3, dim=-1)
    return m.proj(unheads(explicit_attention(heads(q, h), heads(k, h), heads(v, h), bias)))


@pytest.mark.parametrize("hw", [(8, 8), (10, 7), (3, 5)])
@pytest.mark.parametrize("shift", [False, True])
@pytest.mark.parametrize("grad", [False, True], ids=["sdpa", "cpu-training-path"])
def test_shifted_window_attention_matches_explicit(hw, shift, grad):
    """Without gradients SDPA runs; with them, on the CPU, the mixer's own softmax path (forward and backward)."""
    m = randomize(ShiftedWindowAttention(32, 2, window_size=4, shift=shift))
    x = torch.randn(2, hw[0] * hw[1], 32, requires_grad=grad)
    with torch.set_grad_enabled(grad):
        out = m(x, hw)
    expected = swin_explicit(m, x, hw)
    assert_close(out, expected)
    if grad:
        got = torch.autograd.grad(out.square().sum(), [x, *m.parameters()])
        want = torch.autograd.grad(expected.square().sum(), [x, *m.parameters()])
        for a, b in zip(got, want, strict=True):
            assert_close(a, b)


def shunted_explicit(m: ShuntedAttention, x, hw):
    """The paper's equations written out: per branch, aggregate -> [K | V] -> LE(V) -> softmax(QK^T/sqrt d) V."""
    B, N, C = x.shape
    h, r = m.num_heads, m.sr_ratio
    q = heads(m.q(x), h)
    x_map = x.transpose(1, 2).reshape(B, C, *hw)
    if r == 1:
        k, v = m.kv(x).chunk(2, dim=-1)
        local = m.local_conv(v.transpose(1, 2).reshape(B, C, *hw)).flatten(2).transpose(1, 2)
        return m.proj(unheads(explicit_attention(q, heads(k, h), heads(v, h))) + local)
    outs = []
    for q_half, sr, norm, kv, lc in (
        (q[:, : h // 2], m.sr1, m.norm1, m.kv1, m.local_conv1),
        (q[:, h // 2 :], m.sr2, m.norm2, m.kv2, m.local_conv2),
    ):
        agg = sr(x_map)
        k, v = kv(F.gelu(norm(agg.flatten(2).transpose(1, 2)))).chunk(2, dim=-1)
        v = v + lc(v.transpose(1, 2).reshape(B, C // 2, *agg.shape[-2:])).flatten(2).transpose(1, 2)
        outs.append(unheads(explicit_attention(q_half, heads(k, h // 2), heads(v, h // 2))))
    return m.proj(torch.cat(outs, dim=-1))


@pytest.mark.parametrize("sr_ratio", [1, 2, 4, 6, 8])
@pytest.mark.parametrize("hw", [(16, 16), (13, 18)])
def test_shunted_attention_matches_explicit_and_seed(sr_ratio, hw):
    m = randomize(ShuntedAttention(64, 4, sr_ratio=sr_ratio))
    x = torch.randn(2, hw[0] * hw[1], 64)
    out = m(x, hw)
    assert_close(out, shunted_explicit(m, x, hw))
    if hw[0] % sr_ratio == 0 and hw[1] % sr_ratio == 0:  # the seed's views need divisible maps
        seed = SeedAttention(64, 4, qkv_bias=True, sr_ratio=sr_ratio)
        seed.load_state_dict(m.state_dict())
        assert_close(out, seed.eval()(x, *hw))


def test_shunted_kv_layout_is_k_then_v():
    """The [K | V] channel layout matters for official weights: zeroing the V half of kv must zero V."""
    m = randomize(ShuntedAttention(32, 2, sr_ratio=1))
    with torch.no_grad():
        m.kv.weight[32:] = 0
        m.kv.bias[32:] = 0
        m.local_conv.bias.zero_()
    out = m(torch.randn(1, 16, 32), (4, 4))
    assert_close(out, m.proj.bias.expand_as(out))


class OpCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.calls = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def explicit_ffn(name, m, x, hw):
    """The FFN from plain ops, autograd keeping every intermediate."""
    h = m.fc1(x)
    if name == "plain":
        return m.fc2(F.gelu(h))
    conv = m.dwconv.dwconv(h.transpose(1, 2).reshape(len(x), -1, *hw)).flatten(2).transpose(1, 2)
    return m.fc2(F.gelu(h + conv if name == "detail_specific" else conv))


@pytest.mark.parametrize("hw", [(5, 5), (4, 7)])
def test_ffns_match_explicit(hw):
    x = torch.randn(2, hw[0] * hw[1], 16)
    for name in FFNS:
        m = randomize(FFNS[name](16, 32))
        assert_close(m(x, hw), explicit_ffn(name, m, x, hw))
    detail, seed = randomize(FFNS["detail_specific"](16, 32)), SeedMlp(16, 32)
    seed.load_state_dict(detail.state_dict())
    assert_close(detail(x, hw), seed.eval()(x, *hw))


@pytest.mark.parametrize("name", sorted(FFNS))
def test_recomputing_ffn_keeps_one_hidden_tensor_and_gets_the_same_gradients(name):
    ffn, hw = randomize(FFNS[name](16, 64)).train(), (4, 5)
    x = torch.randn(2, 20, 16, requires_grad=True)
    params = {p.data_ptr() for p in ffn.parameters()}
    hidden_saved = []

    def pack(t):
        if t.data_ptr() not in params and t.numel() == 2 * 20 * 64:
            hidden_saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        ffn(x, hw)  # recompute=None: off on the CPU
        assert len(hidden_saved) >= 2
        hidden_saved.clear()
        ffn.recompute = True
        out = ffn(x, hw)
    assert len(hidden_saved) == 1  # fc1's output; plain autograd keeps 2 (plain FFN) or 3
    with OpCounter() as ops:
        out.square().sum().backward()
    assert ops.calls["gelu"] == 1 and ops.calls["addmm"] == 0  # the GELU is recomputed, fc2's forward is not
    grads = [x.grad, *(p.grad for p in ffn.parameters())]
    x.grad = None
    ffn.zero_grad()
    explicit_ffn(name, ffn, x, hw).square().sum().backward()
    for a, b in zip(grads, [x.grad, *(p.grad for p in ffn.parameters())], strict=True):
        assert_close(a, b)


@pytest.mark.parametrize("name", ["vit", "pvt", "swin", "shunted"])
def test_mixer_interface_and_gradients(name):
    m = build_mixer(name, 32, 4, dict(sr_ratio=2, window_size=3, shift=True))
    for hw in [(6, 6), (5, 9)]:
        x = torch.randn(2, hw[0] * hw[1], 32, requires_grad=True)
        out = m(x, hw)
        assert out.shape == x.shape
        out.square().mean().backward()
        assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())


@pytest.mark.parametrize("batch", [1, 2])
def test_attention_maps_are_never_materialised(batch):
    """Every mixer runs SDPA's fused CPU kernel, whose softmax never leaves it, at any batch size.

    A value tensor whose channels are not contiguous sends SDPA to its math path (an explicit
    softmax): at batch 1 the depth-wise conv on Shunted's values returned one. Swin's CPU training
    path is the exception, tested above.
    """
    for name in ("vit", "pvt", "swin", "shunted"):
        mixer = build_mixer(name, 32, 4, dict(sr_ratio=2, window_size=3, shift=True))
        with torch.no_grad(), OpCounter() as ops:
            mixer(torch.randn(batch, 36, 32), (6, 6))
        assert ops.calls["_scaled_dot_product_flash_attention_for_cpu"] > 0, name
        assert not [op for op in ops.calls if "softmax" in op], (name, dict(ops.calls))
