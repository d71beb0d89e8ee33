"""compile=cudagraphs: the graphed step's logic (static batch, lr tensors, clipping inside, an odd-sized
batch run eagerly) and padded evaluation give the plain step's numbers, on the CPU where nothing is
captured; on a GPU, captured and replayed, within bf16 tolerance (those tests skip without one)."""

import json
from contextlib import nullcontext

import lightning as L
import pytest
import timm
import torch
import torch.nn.functional as F
from helpers import CONF_DIR, compose_cfg, run_py
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from shunted_lab.models import MIXERS
from shunted_lab.training.classifier import ImageClassifier
from shunted_lab.training.fit import train
from shunted_lab.training.graphs.engine import (
    MAX_EVAL_SHAPES,
    GraphContext,
    GraphedAdamW,
    GraphedForward,
    StaticBatch,
)

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def nano(attention: str = "shunted", device: str = "cpu"):
    torch.manual_seed(0)
    model = timm.create_model("shunted_nano", num_classes=5, attention=attention, drop_path_rate=0.1)
    return model.to(device)


def batches(sizes: list[int], device: str = "cpu", side: int = 32) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    return [
        (
            torch.randn(n, 3, side, side, generator=generator).to(device),
            torch.randint(0, 5, (n,), generator=generator).to(device),
        )
        for n in sizes
    ]


def closure(model, x, y):
    def run():
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss

    return run


def plain_steps(model, data, lrs, max_grad_norm: float, autocast) -> list[torch.Tensor]:
    """The eager step the graph mode replaces: fused AdamW, the schedule's float lr, clipping between."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lrs[0], weight_decay=0.05, fused=True)
    losses = []
    for (x, y), lr in zip(data, lrs, strict=True):
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        torch.manual_seed(len(losses))  # the same drop-path draws in both runs
        with autocast():
            losses.append(closure(model, x, y)().detach())
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        optimizer.step()
    return losses


def graphed_steps(model, data, lrs, max_grad_norm: float, autocast) -> tuple[list[torch.Tensor], GraphedAdamW]:
    """As the module runs them: each batch loaded into the static buffers, the closure on those buffers;
    a batch of another shape on itself, not graphed."""
    graphs = GraphContext(next(model.parameters()).device)
    optimizer = GraphedAdamW(
        model.parameters(), lr=lrs[0], weight_decay=0.05, graphs=graphs, max_grad_norm=max_grad_norm
    )
    static, losses = StaticBatch(), []
    for (x, y), lr in zip(data, lrs, strict=True):
        for group in optimizer.param_groups:
            group["lr"] = lr
        graphed = static.load(x, y)
        torch.manual_seed(len(losses))
        with autocast():
            run = closure(model, *(static.tensors if graphed else (x, y)))
            losses.append(optimizer.step(loss_and_backward=run, graphed=graphed))
    return losses, optimizer


def assert_same_training(sizes, lrs, device, autocast, tolerance: dict, backend: str | None = None) -> GraphedAdamW:
    data = batches(sizes, device)
    plain, graphed = nano(device=device), nano(device=device)
    if backend:  # compile=cudagraphs: the graphed step around compiled blocks
        torch._dynamo.reset()
        graphed.compile_blocks(backend=backend)
    expected = plain_steps(plain, data, lrs, 0.5, autocast)
    losses, optimizer = graphed_steps(graphed, data, lrs, 0.5, autocast)
    torch.testing.assert_close(torch.stack(losses), torch.stack(expected), **tolerance)
    for (name, a), b in zip(graphed.named_parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, **tolerance, msg=lambda m, name=name: f"{name} grad: {m}")
        torch.testing.assert_close(a, b, **tolerance, msg=lambda m, name=name: f"{name}: {m}")
    return optimizer


def test_the_graphed_step_gives_the_plain_steps_losses_gradients_and_weights_with_an_odd_last_batch():
    # A schedule that changes the lr every step, gradients clipped, and a last batch of 3 that runs eagerly.
    lrs = [1e-3, 2e-3, 5e-4, 1e-4, 3e-3, 1e-3]
    optimizer = assert_same_training([4, 4, 4, 4, 4, 3], lrs, "cpu", nullcontext, dict(rtol=0, atol=0))
    # The update read the lr tensors; the groups still hold the schedule's floats (checkpoints, LR monitor).
    assert [t.item() for t in optimizer.lr_tensors] == pytest.approx([lrs[-1]])
    assert all(type(g["lr"]) is float for g in optimizer.param_groups)
    assert all(g["capturable"] and g["fused"] for g in optimizer.param_groups)


@pytest.mark.slow  # dynamo traces forward and backward
def test_the_graphed_step_around_compiled_blocks_under_bf16_autocast_gives_the_plain_steps_numbers():
    # compile=cudagraphs on the CPU: the blocks compiled (aot_eager traces as Inductor does), bf16 as on a GPU.
    def bf16():
        return torch.autocast("cpu", dtype=torch.bfloat16)

    tolerance = dict(rtol=2e-2, atol=2e-3)
    assert_same_training([4, 4, 4, 4, 3], [1e-3, 2e-3, 5e-4, 1e-3, 1e-4], "cpu", bf16, tolerance, "aot_eager")


def test_static_batch_copies_same_shaped_batches_into_its_buffers_and_refuses_others():
    static = StaticBatch()
    first, second, odd = batches([4, 4, 3])
    assert static.load(*first)
    buffers = [t.data_ptr() for t in static.tensors]
    assert static.load(*second) and [t.data_ptr() for t in static.tensors] == buffers
    assert all(torch.equal(a, b) for a, b in zip(static.tensors, second, strict=True))
    assert not static.load(*odd) and all(torch.equal(a, b) for a, b in zip(static.tensors, second, strict=True))


def test_padded_evaluation_equals_the_unpadded_forward_and_keeps_one_buffer_per_shape():
    model = nano().eval()
    forward = GraphedForward(GraphContext(torch.device("cpu")))
    with torch.inference_mode():
        for x, _ in batches([4, 3, 1, 4]):
            torch.testing.assert_close(forward(model, x), model(x), rtol=1e-5, atol=1e-6)
        assert len(forward.captured) == 1  # the smaller batches were padded into the first one's buffer
        x, _ = batches([6])[0]
        torch.testing.assert_close(forward(model, x), model(x), rtol=1e-5, atol=1e-6)
        assert len(forward.captured) == 1 and len(next(iter(forward.captured.values()))[1]) == 6


# --- What a graph reads stays where it was captured (the invariants a GPU run depends on) -----------------


class GradientIdentity(L.Callback):
    """The gradient tensors, as objects, at each training batch's end (a run's callback: class-level)."""

    seen: list[list[int]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        GradientIdentity.seen.append([id(p.grad) for p in pl_module.model.parameters()])


def test_the_graphed_steps_gradients_stay_the_same_tensors_across_validations_inside_fit(tmp_path):
    # Lightning sets the gradients to None before each validation inside fit; a captured step would
    # then write into freed memory. The graphed optimizer keeps them and puts them back.
    GradientIdentity.seen = []
    overrides = [
        "compile=cudagraphs-eager",
        "data.num_train=64",
        "trainer.max_epochs=2",
        "+trainer.val_check_interval=2",
    ]
    train(compose_cfg(tmp_path, *overrides, "+callbacks.grads._target_=test_cuda_graphs.GradientIdentity"))
    seen = GradientIdentity.seen
    assert len(seen) == 2 * 64 // 16 and all(ids == seen[0] for ids in seen)  # 4 validations between them


def recipe(**changes) -> dict:
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        return {**OmegaConf.to_container(compose("config").optim), **changes}


def test_a_graphed_evaluation_captures_again_after_the_module_moved():
    model = nano().eval()
    forward = GraphedForward(GraphContext(torch.device("cpu")))
    x, _ = batches([4])[0]
    with torch.inference_mode():
        forward(model, x)
        [(key, (_, buffer, _, read))] = forward.captured.items()
        model.double().float()  # new storage for every parameter, as a teardown to the CPU and back gives
        torch.testing.assert_close(forward(model, x), model(x), rtol=1e-5, atol=1e-6)
        [(again, (_, new_buffer, _, new_read))] = forward.captured.items()
    assert again == key and new_buffer is not buffer and new_read != read


def test_evaluation_shapes_past_the_cap_run_eagerly():
    model = nano().eval()
    forward = GraphedForward(GraphContext(torch.device("cpu")))
    with torch.inference_mode():
        for side in range(32, 32 + 8 * (MAX_EVAL_SHAPES + 2), 8):  # every batch another shape
            x = torch.randn(2, 3, side, side)
            torch.testing.assert_close(forward(model, x), model(x), rtol=1e-5, atol=1e-6)
    assert len(forward.captured) == MAX_EVAL_SHAPES


def test_the_ema_of_a_compiled_model_compiles_blocks_of_its_own():
    # A deep copy of a compiled block loses its compiled forward: the EMA compiles blocks of its own.
    module = ImageClassifier(nano(), num_classes=5, compile=True, **recipe(ema_decay=0.9))
    live = [b for stage in module.model.stages for b in stage.blocks]
    ema = [b for stage in module.ema.module.stages for b in stage.blocks]
    for own, other in zip(ema, live, strict=True):
        assert own._compiled_call_impl._torchdynamo_orig_callable.__self__ is own
        assert other._compiled_call_impl._torchdynamo_orig_callable.__self__ is other


def test_resuming_an_eager_runs_optimizer_state_keeps_the_graphed_optimizer_capturable():
    model = nano()
    eager = torch.optim.AdamW(model.parameters(), lr=1e-3)  # capturable=False, fused=None, step on the CPU
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    eager.step()
    graphed = GraphedAdamW(model.parameters(), lr=1e-3, graphs=GraphContext(torch.device("cpu")))
    graphed.load_state_dict(eager.state_dict())
    assert all(g["capturable"] and g["fused"] for g in graphed.param_groups)
    assert all(s["step"].dtype == torch.float32 for s in graphed.state.values())


def test_lightnings_hooks_run_before_the_graphed_work_not_inside_it():
    model = nano()
    optimizer = GraphedAdamW(model.parameters(), lr=1e-3, graphs=GraphContext(torch.device("cpu")))
    order = []
    x, y = batches([2])[0]

    def loss_and_backward():
        order.append("step")
        return closure(model, x, y)()

    optimizer.step(lambda: order.append("hooks"), loss_and_backward=loss_and_backward)
    assert order == ["hooks", "step"]


def test_a_graph_mode_run_gives_the_eager_runs_metrics(tmp_path):
    # Mixup/CutMix, label smoothing, EMA and gradient clipping in both; on the CPU the graph mode runs the
    # graphed step's code eagerly, so the two runs must agree.
    recipe = ["optim.mixup=0.8", "optim.cutmix=1.0", "optim.label_smoothing=0.1", "optim.ema_decay=0.9"]
    recipe += ["trainer.gradient_clip_val=0.5", "trainer.max_epochs=2", "model.drop_path_rate=0.1"]
    runs = []
    for mode in ("false", "cudagraphs-eager"):
        cfg = compose_cfg(tmp_path / mode, *recipe, f"compile={mode}")
        train(cfg)
        runs.append(json.loads((tmp_path / mode / "out" / "metrics.json").read_text()))
    eager, graphed = runs
    assert graphed["global_step"] == eager["global_step"] == 8
    for key in ("val/loss", "val/top1", "val_ema/loss", "test/loss", "test/top1"):
        assert graphed[key] == eager[key], key  # bit for bit: the same kernels in the same order
    assert graphed["cuda_graphs"] is None  # nothing is captured on the CPU
    groups = torch.load(graphed["best_checkpoint"], weights_only=True)["optimizer_states"][0]["param_groups"]
    assert all(g["capturable"] and g["fused"] for g in groups) and len(groups) == 2  # the graphed AdamW, decay groups


def test_a_graph_mode_run_resumes_from_its_last_checkpoint(tmp_path):
    first = compose_cfg(tmp_path / "a", "compile=cudagraphs-eager")
    train(first)
    last = tmp_path / "a" / "out" / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=True)["optimizer_states"][0]
    assert all(type(g["lr"]) is float for g in state["param_groups"])  # the schedule's value, not a device tensor
    second = compose_cfg(tmp_path / "b", "compile=cudagraphs-eager", "trainer.max_epochs=2", f"ckpt_path={last}")
    train(second)
    assert json.loads((tmp_path / "b" / "out" / "metrics.json").read_text())["global_step"] == 8


# On a GPU: captured and replayed.


@cuda
@pytest.mark.parametrize("attention", sorted(MIXERS))
def test_a_captured_training_step_replays_the_eager_steps_within_bf16_tolerance(attention):
    # 3 eager warm-up steps, the capture (replayed once), 3 replays, then an odd batch run eagerly.
    sizes, lrs = [8] * 7 + [5], [1e-3, 2e-3, 1e-3, 5e-4, 1e-3, 2e-3, 1e-4, 1e-3]
    data = batches(sizes, "cuda")
    plain, graphed = nano(attention, "cuda"), nano(attention, "cuda")

    def bf16():
        return torch.autocast("cuda", dtype=torch.bfloat16)

    expected = plain_steps(plain, data, lrs, 0.5, bf16)
    losses, optimizer = graphed_steps(graphed, data, lrs, 0.5, bf16)
    assert optimizer.graph is not None and optimizer.graphs.count == 1
    torch.testing.assert_close(torch.stack(losses), torch.stack(expected), rtol=2e-2, atol=2e-2)
    for a, b in zip(graphed.parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=2e-2, atol=2e-3)


@cuda
def test_evaluation_in_graphs_over_batches_of_two_sizes():
    model = nano(device="cuda").eval()
    forward = GraphedForward(GraphContext(torch.device("cuda")))
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        for x, _ in batches([8, 8, 5, 8, 5], "cuda"):
            torch.testing.assert_close(forward(model, x).float(), model(x).float(), rtol=2e-2, atol=2e-2)
    assert forward.context.count == 1  # the batches of 5 were padded into the graph of 8


@cuda
@pytest.mark.slow
def test_a_gpu_run_in_the_graph_mode_trains_evaluates_and_records_its_capture(tmp_path):
    proc = run_py(tmp_path, "trainer=gpu", "compile=cudagraphs", "logger=csv", "data.num_train=512", "data.num_val=100")
    output, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, output[-3000:]
    metrics = json.loads(next(tmp_path.glob("logs/runs/*/metrics.json")).read_text())
    assert metrics["cuda_graphs"] >= 2 and metrics["cuda_graphs_setup_s"] > 0  # training, evaluation
    assert "overwritten" not in output
