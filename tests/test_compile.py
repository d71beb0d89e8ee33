"""GPU-path options on the CPU: regional compilation (one graph per kind of block, not per block)
and every compile mode and FFN recompute setting giving eager's outputs and gradients."""

import copy

import pytest
import timm
import torch
from torch._dynamo.utils import counters

from shunted_lab.models import MIXERS

pytestmark = pytest.mark.slow  # dynamo traces forward and backward: 5-15 s a test


def block_kinds(model) -> int:
    """Distinct blocks by what dynamo may specialise on: their stage (shapes) and swin's shift flag."""
    return len({(i, getattr(b.attn, "shift", None)) for i, s in enumerate(model.stages) for b in s.blocks})


def assert_same(out, grads, expected, expected_grads, rtol: float, atol: float) -> None:
    torch.testing.assert_close(out, expected, rtol=rtol, atol=atol)
    for a, b in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


def train_step(model, x):
    torch.manual_seed(1)  # the same drop-path draws in both models
    out = model(x)
    out.square().mean().backward()
    return out, [p.grad for p in model.parameters()]


@pytest.mark.parametrize("attention,ffn_recompute", [*((a, False) for a in sorted(MIXERS)), ("shunted", True)])
def test_compiled_blocks_compile_once_per_kind_and_match_eager(attention, ffn_recompute):
    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    eager = timm.create_model(
        "shunted_nano", attention=attention, depths=(2, 2, 3, 2), drop_path_rate=0.2, ffn_recompute=ffn_recompute
    )
    compiled = copy.deepcopy(eager)
    # aot_eager traces forward and backward as Inductor does, without generating code: seconds, not minutes.
    compiled.compile_blocks(backend="aot_eager")
    x = torch.randn(2, 3, 64, 64)
    expected, expected_grads = train_step(eager, x)
    out, grads = train_step(compiled, x)
    # Drop-path rates are buffers, so the 2-3 blocks of a stage share one graph: no recompiles across them.
    assert counters["stats"]["unique_graphs"] == block_kinds(compiled)
    assert_same(out, grads, expected, expected_grads, rtol=1e-4, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(compiled.eval()(x), eager.eval()(x), rtol=1e-5, atol=1e-6)


def test_compile_modes_under_bf16_autocast_match_eager():
    # The GPU configuration (bf16 autocast) on the CPU: the same compiled blocks run.
    torch.manual_seed(0)
    eager = timm.create_model("shunted_nano", depths=(2, 2, 2, 2), drop_path_rate=0.1)
    for mode in ("default", "max-autotune-no-cudagraphs"):
        torch._dynamo.reset()
        compiled = copy.deepcopy(eager)
        compiled.compile_blocks(backend="aot_eager", mode=mode)
        x = torch.randn(2, 3, 64, 64)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            expected, expected_grads = train_step(eager, x)
            eager.zero_grad()
            out, grads = train_step(compiled, x)
        assert_same(out, grads, expected, expected_grads, rtol=1e-2, atol=1e-3)  # bf16 rounding
