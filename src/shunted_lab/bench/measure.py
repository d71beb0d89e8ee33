"""One benchmark entry measured in this process: build it, time inference and training steps,
peak memory, what autograd keeps for backward, and (--profile) GPU busy share and kernel launches."""

import resource
import statistics
import time
from contextlib import nullcontext
from functools import partial

import timm
import torch
import torch.nn.functional as F

from ..config import GRAPH_MODES
from ..models.pyramid import checkpoint_filter_fn
from ..models.reference import reference_model
from ..models.stats import count_gmacs, count_params
from ..training.graphs.engine import GraphContext, GraphedAdamW, GraphedForward
from .op_times import op_times_ms

# Dense bf16 tensor-core peaks (TFLOP/s) for MFU; other GPUs fall back to a measured matmul peak.
GPU_BF16_PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}
# How our models run, as `compile=` runs them in training: eager; every block compiled; the whole step
# (and inference) in one CUDA graph, with the blocks compiled or eager (training/graphs/engine.py).
MODES = ("eager", "compile", *GRAPH_MODES)
COMPILED_MODES = ("compile", "cudagraphs")
AUTOCAST_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def build(entry: dict) -> tuple[torch.nn.Module, dict]:
    """A model for the entry and facts about it; reference entries share the fast model's weights."""
    if entry["kind"] == "peer":
        return timm.create_model(entry["model"], num_classes=1000), {}
    torch.manual_seed(0)
    fast = timm.create_model(
        entry["model"],
        num_classes=1000,
        attention=entry["attention"],
        mlp=entry["mlp"],
        drop_path_rate=0.0,
        ffn_recompute=entry.get("ffn_recompute", False),
    )
    if entry["kind"] == "ours":
        return fast, {}
    reference = reference_model(entry["model"])
    fast.load_state_dict(checkpoint_filter_fn(reference.state_dict(), fast))
    x = torch.randn(2, 3, entry["image_size"], entry["image_size"])
    with torch.no_grad():
        a, b = fast.eval()(x), reference.eval()(x)
    return reference, {"max_rel_diff_vs_fast": ((a - b).abs().max() / b.abs().max()).item()}


def backward(model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Forward, cross-entropy and backward: what a training step's closure computes."""
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    return loss


def optimizer_step(optimizer: torch.optim.Optimizer, loss_and_backward) -> torch.Tensor:
    """One training step: eager, or with a GraphedAdamW the replay of the closure and the update (the
    closure then reads the same tensors at every step: the static batch)."""
    if isinstance(optimizer, GraphedAdamW):
        return optimizer.step(loss_and_backward=loss_and_backward)
    optimizer.zero_grad(set_to_none=True)
    loss = loss_and_backward()
    optimizer.step()
    return loss


def sync(device: torch.device) -> None:
    """Wait for the device's queued work, so that wall clocks measure it (CPU ops run synchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(step, warmup: int, iters: int, device: torch.device) -> list[float]:
    """Seconds per call of step, for each of `iters` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(iters):
        sync(device)
        start = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - start)
    return times


def matmul_peak_tflops(device: torch.device, dtype: torch.dtype) -> float:
    """The fastest of 20 large matmuls: the peak, not a typical call, is what FLOP shares divide by."""
    # CPUs without bf16/fp16 units (AVX2 only) emulate them, orders of magnitude slower than fp32:
    # a smaller square keeps the measurement to seconds on any CPU.
    n = 8192 if device.type == "cuda" else 1024 if dtype == torch.float32 else 512
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n**3 / min(timed(lambda: a @ b, 3, 20, device)) / 1e12


def saved_for_backward_mb(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, autocast) -> float:
    """What autograd keeps from one training forward for the backward pass, parameters excluded.

    This activation memory is most of the peak training memory at large batch on any device, and
    unlike peak RSS it is exact on the CPU too.
    """
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    kept = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            kept[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast:
        F.cross_entropy(model(x), y)
    return sum(kept.values()) / 2**20


def measure(entry: dict, args) -> dict:
    device = torch.device(args.device)
    torch.manual_seed(0)
    model, facts = build(entry)
    result = {**entry, **facts, "params": count_params(model), "gmacs": count_gmacs(model, args.image_size)}
    model = model.to(device)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    # Only our models compile (regionally, per block); the reference and the peers run as their users run them.
    mode = entry.get("mode", "eager")
    if mode in COMPILED_MODES:
        model.compile_blocks(backend=args.compile_backend)
    graphs = GraphContext(device) if mode in GRAPH_MODES else None
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device).to(memory_format=memory_format)
    y = torch.randint(0, 1000, (args.batch_size,), device=device)
    autocast = (
        nullcontext()
        if args.precision == "fp32"
        else torch.autocast(device.type, dtype=AUTOCAST_DTYPES[args.precision])
    )

    model.eval()
    infer = model if graphs is None else partial(GraphedForward(graphs), model)
    with torch.inference_mode(), autocast:
        first_infer_s = timed(lambda: infer(x), 0, 1, device)[0]  # compilation (and capture) included
        infer_times = timed(lambda: infer(x), args.warmup, args.iters, device)
    model.train()
    if graphs is None:
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)  # as the module's
    else:
        optimizer = GraphedAdamW(model.parameters(), lr=1e-4, graphs=graphs)

    def train_step():
        with autocast:
            optimizer_step(optimizer, partial(backward, model, x, y))  # x and y: the same tensors every step

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    # Compilation included; in the graph modes, up to the first replay (the eager warm-up steps and the capture).
    first_train_s = sum(timed(train_step, 0, 1 + (optimizer.eager_steps if graphs else 0), device))
    train_times = timed(train_step, args.warmup, args.iters, device)
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.op_times:  # straight after the timed steps, so that memory is in the state they left it
        result["train_op_ms"] = op_times_ms(train_step)
    if args.profile:
        result["profile"] = profile_summary(train_step, device)
    result.update(
        first_infer_s=first_infer_s,
        first_train_s=first_train_s,
        infer_seconds=infer_times,
        train_seconds=train_times,
        saved_for_backward_mb=saved_for_backward_mb(model, x, y, autocast),
        peak_memory_mb=peak_mb,
        memory="cuda peak allocated" if device.type == "cuda" else "peak RSS",
    )
    if graphs is not None and graphs.capture:  # eager warm-up steps and captures, compilation included
        result.update(graph_setup_s=graphs.setup_s, graphs_captured=graphs.count)
    return result


def profile_summary(train_step, device: torch.device, steps: int = 3) -> dict:
    """Per training step under torch.profiler: wall ms, GPU kernel ms, the GPU's busy share and the
    number of kernel launches (a launch-bound step is busy a small share of its wall time). The wall
    time is taken in a separate, unprofiled run of the same steps; on the CPU only the op count."""
    wall_ms = 1000 * statistics.fmean(timed(train_step, 0, steps, device))
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(steps):
            train_step()
        sync(device)
    events = prof.events()
    kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
    summary = {
        "wall_ms_per_step": wall_ms,
        "aten_ops_per_step": sum(e.name.startswith("aten::") for e in events) / steps,
    }
    if device.type == "cuda":
        kernel_ms = sum(e.device_time for e in kernels) / 1000 / steps
        summary.update(
            kernel_ms_per_step=kernel_ms,
            gpu_busy=kernel_ms / wall_ms,
            kernel_launches_per_step=len(kernels) / steps,  # in the graph modes: kernels, run by graph launches
            graph_launches_per_step=sum(e.name == "cudaGraphLaunch" for e in events) / steps,
        )
    return summary


def images_per_s(seconds: list[float], batch_size: int) -> float:
    return batch_size / statistics.median(seconds)


def summarise(rounds: list[dict], batch_size: int) -> dict:
    """One entry's rounds -> medians over every timed iteration of every round."""
    result = dict(rounds[0], rounds=len(rounds), peak_memory_mb=max(r["peak_memory_mb"] for r in rounds))
    macs = result["gmacs"] * 1e9 * batch_size
    for phase, flops_per_mac in (("infer", 2), ("train", 6)):  # training: forward + backward = 3 x forward
        times = [t for r in rounds for t in r[f"{phase}_seconds"]]
        result[f"{phase}_seconds"] = times
        result[f"{phase}_images_per_s"] = images_per_s(times, batch_size)
        result[f"{phase}_images_per_s_per_round"] = [images_per_s(r[f"{phase}_seconds"], batch_size) for r in rounds]
        result[f"{phase}_tflops"] = flops_per_mac * macs * result[f"{phase}_images_per_s"] / batch_size / 1e12
    if "train_op_ms" in result:
        ops = {op for r in rounds for op in r["train_op_ms"]}
        medians = {op: statistics.median(r["train_op_ms"].get(op, 0.0) for r in rounds) for op in ops}
        result["train_op_ms"] = dict(sorted(medians.items(), key=lambda kv: -kv[1]))
    return result
