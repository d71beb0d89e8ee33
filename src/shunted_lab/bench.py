"""What every variant and its peers cost: params, GMACs, images/s, peak memory, FLOP efficiency.

    python -m shunted_lab.bench --models shunted_s --attention shunted --reference \\
        --peers pvt_v2_b2,swin_tiny_patch4_window7_224,deit_small_patch16_224 --batch-size 8

Random weights and inputs; `--warmup` untimed then `--iters` timed iterations, the median
reported. Training = forward, cross-entropy, backward, AdamW step. `--reference` adds the
published formulation (models/reference.py) with the same weights as the fast model, checks that
the outputs agree and reports the speed ratios. Each entry runs in its own process, so that its
peak memory is its own (on CPU, peak RSS includes the ~0.5 GB of the runtime itself). The entries
are measured in turn for `--rounds` rounds and each median pools all rounds: a machine whose
speed drifts over minutes (shared CPUs do, by 10-20%) then slows every entry alike.
`--op-times` (CPU) adds where a training step's time goes, op by op, for every entry.
"""

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from collections import Counter
from contextlib import nullcontext
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch.utils._python_dispatch import TorchDispatchMode

from .models.pyramid import checkpoint_filter_fn
from .models.reference import PRESETS, reference_model
from .models.stats import count_gmacs, count_params

# Dense bf16 tensor-core peaks (TFLOP/s) for MFU; other GPUs fall back to a measured matmul peak.
GPU_BF16_PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}
# The training recipe of a default run (the module has no defaults of its own).
OPTIM_DEFAULTS = Path(__file__).resolve().parents[2] / "conf" / "optim" / "default.yaml"
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


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
        **({"cpu_chunk_mib": entry["cpu_chunk_mib"]} if "cpu_chunk_mib" in entry else {}),
    )
    if entry["kind"] == "ours":
        return fast, {}
    reference = reference_model(entry["model"])
    fast.load_state_dict(checkpoint_filter_fn(reference.state_dict(), fast))
    x = torch.randn(2, 3, entry["image_size"], entry["image_size"])
    with torch.no_grad():
        a, b = fast.eval()(x), reference.eval()(x)
    return reference, {"max_rel_diff_vs_fast": ((a - b).abs().max() / b.abs().max()).item()}


def timed(step, warmup: int, iters: int, device: torch.device) -> list[float]:
    """Seconds per call of step, for each of `iters` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(iters):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


def matmul_peak_tflops(device: torch.device, dtype: torch.dtype) -> float:
    """The fastest of 20 large matmuls: the peak, not a typical call, is what FLOP shares divide by."""
    # CPUs without bf16/fp16 units emulate them at about 1 GFLOP/s (a 2048-wide bf16 matmul took 61 s
    # on an AVX2-only EPYC): a smaller square keeps the measurement to seconds on any CPU.
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
    runner = torch.compile(model) if args.compile else model
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device).to(memory_format=memory_format)
    y = torch.randint(0, 1000, (args.batch_size,), device=device)
    autocast = (
        nullcontext() if args.precision == "fp32" else torch.autocast(device.type, dtype=PRECISIONS[args.precision])
    )

    model.eval()
    with torch.inference_mode(), autocast:
        infer_times = timed(lambda: runner(x), args.warmup, args.iters, device)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)  # as the module's

    def train_step():
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = F.cross_entropy(runner(x), y)
        loss.backward()
        optimizer.step()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    train_times = timed(train_step, args.warmup, args.iters, device)
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.op_times:  # straight after the timed steps, so that memory is in the state they left it
        result["train_op_ms"] = op_times_ms(train_step)
    result.update(
        infer_seconds=infer_times,
        train_seconds=train_times,
        saved_for_backward_mb=saved_for_backward_mb(model, x, y, autocast),
        peak_memory_mb=peak_mb,
        memory="cuda peak allocated" if device.type == "cuda" else "peak RSS",
    )
    return result


class OpTimer(TorchDispatchMode):
    """Wall time of every aten op. CPU ops run synchronously, so each time is the op's own."""

    def __init__(self):
        super().__init__()
        self.seconds = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        start = time.perf_counter()
        out = func(*args, **(kwargs or {}))
        name = str(func.overloadpacket)
        if func.overloadpacket in (torch.ops.aten.convolution, torch.ops.aten.convolution_backward):
            # The FFN's depth-wise convs and the stem's dense ones cost differently per FLOP.
            forward = func.overloadpacket is torch.ops.aten.convolution
            weight, groups = (args[1], args[8]) if forward else (args[2], args[9])
            name += " (depth-wise)" if groups > 1 and groups == weight.shape[0] else " (dense)"
        self.seconds[name] += time.perf_counter() - start
        return out


def op_times_ms(train_step, steps: int = 2) -> dict[str, float]:
    """Milliseconds per training step of every op, largest first (the timing adds some overhead)."""
    timer = OpTimer()
    with timer:
        for _ in range(steps):
            train_step()
    return {name: 1000 * s / steps for name, s in timer.seconds.most_common()}


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


def entries(args) -> list[dict]:
    out = []
    ffn_recompute = args.ffn_recompute == "on"
    for model in args.models:
        for attention in args.attention:
            for mlp in args.mlp:
                for chunk in args.cpu_chunk_mib or [None]:
                    entry = dict(
                        kind="ours",
                        model=model,
                        attention=attention,
                        mlp=mlp,
                        image_size=args.image_size,
                        ffn_recompute=ffn_recompute,
                    )
                    out.append(entry if chunk is None else dict(entry, cpu_chunk_mib=chunk))
        if args.reference and model in PRESETS:
            out.append(
                dict(
                    kind="reference",
                    model=model,
                    attention="shunted",
                    mlp="detail_specific",
                    image_size=args.image_size,
                )
            )
    out += [dict(kind="peer", model=p, attention="-", mlp="-", image_size=args.image_size) for p in args.peers]
    return out


def label(r: dict) -> str:
    if r["kind"] == "peer":
        return f"timm {r['model']}"
    tags = f" [chunks {r['cpu_chunk_mib']:g} MiB]" if "cpu_chunk_mib" in r else ""
    if r.get("ffn_recompute"):
        tags += " [FFN recompute on]"
    return f"{r['model']} {r['attention']}/{r['mlp']}{tags}" + (" (reference)" if r["kind"] == "reference" else "")


def add_comparisons(results: list[dict], peak_tflops: float) -> None:
    for r in results:
        r["gmac_per_s_train"] = r["gmacs"] * r["train_images_per_s"]
        r["gmac_per_s_infer"] = r["gmacs"] * r["infer_images_per_s"]
        r["train_flop_share_of_peak"] = r["train_tflops"] / peak_tflops
        r["infer_flop_share_of_peak"] = r["infer_tflops"] / peak_tflops
    for ref in (r for r in results if r["kind"] == "reference"):
        for r in results:
            if r["kind"] == "ours" and (r["model"], r["attention"], r["mlp"]) == (
                ref["model"],
                "shunted",
                "detail_specific",
            ):
                vs = {
                    f"{key}_ratio": r[f"{key}_mb"] / ref[f"{key}_mb"] for key in ("peak_memory", "saved_for_backward")
                }
                for phase in ("train", "infer"):
                    vs[f"{phase}_speedup"] = r[f"{phase}_images_per_s"] / ref[f"{phase}_images_per_s"]
                    key = f"{phase}_images_per_s_per_round"
                    vs[f"{phase}_speedup_per_round"] = [a / b for a, b in zip(r[key], ref[key], strict=True)]
                r["vs_reference"] = vs


def markdown(results: list[dict], meta: dict) -> str:
    lines = [
        f"Device: {meta['device_name']}; batch {meta['batch_size']}, {meta['image_size']}px, {meta['precision']}, "
        f"channels_last={meta['channels_last']}, compile={meta['compile']}; median of {meta['rounds']} rounds x "
        f"{meta['iters']} iterations after {meta['warmup']}; peak {meta['peak_kind']} {meta['peak_tflops']:.2f} "
        "TFLOP/s.",
        "",
        "| model | params (M) | GMACs | infer img/s | train img/s | train GMAC/s | train FLOP share | peak mem (MB) "
        "| saved for backward (MB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {label(r)} | {r['params'] / 1e6:.2f} | {r['gmacs']:.2f} | {r['infer_images_per_s']:.1f} "
            f"| {r['train_images_per_s']:.1f} | {r['gmac_per_s_train']:.1f} | {r['train_flop_share_of_peak']:.1%} "
            f"| {r['peak_memory_mb']:.0f} | {r['saved_for_backward_mb']:.0f} |"
        )
    ratios = [r for r in results if "vs_reference" in r]
    if ratios:
        lines += [
            "",
            "| vs reference | train speed-up (rounds: min-max) | inference speed-up (rounds) | peak memory ratio "
            "| saved for backward ratio | max rel diff |",
            "|---|---|---|---|---|---|",
        ]
        diffs = {r["model"]: r.get("max_rel_diff_vs_fast") for r in results if r["kind"] == "reference"}

        def speedup(v: dict, phase: str) -> str:
            per_round = v[f"{phase}_speedup_per_round"]
            return f"{v[f'{phase}_speedup']:.2f}x ({min(per_round):.2f}-{max(per_round):.2f})"

        for r in ratios:
            v = r["vs_reference"]
            lines.append(
                f"| {label(r)} | {speedup(v, 'train')} | {speedup(v, 'infer')} | {v['peak_memory_ratio']:.2f} "
                f"| {v['saved_for_backward_ratio']:.2f} | {diffs[r['model']]:.1e} |"
            )
    if "train_op_ms" in results[0]:
        lines += ["", *op_table(results)]
    return "\n".join(lines) + "\n"


def op_table(results: list[dict], top: int = 10) -> list[str]:
    """Each entry's `top` slowest ops side by side, in ms per training step."""
    ops = sorted(
        {op for r in results for op in list(r["train_op_ms"])[:top]},
        key=lambda op: -max(r["train_op_ms"].get(op, 0.0) for r in results),
    )
    lines = [
        "| ms per training step, op by op | " + " | ".join(label(r) for r in results) + " |",
        "|---|" + "---|" * len(results),
    ]
    for op in ops:
        lines.append(f"| {op} | " + " | ".join(f"{r['train_op_ms'].get(op, 0.0):.1f}" for r in results) + " |")
    other = [sum(ms for op, ms in r["train_op_ms"].items() if op not in ops) for r in results]
    lines.append("| other ops | " + " | ".join(f"{ms:.1f}" for ms in other) + " |")
    lines.append("| all ops | " + " | ".join(f"{sum(r['train_op_ms'].values()):.1f}" for r in results) + " |")
    return lines


def loop_overhead(args) -> dict:
    """Training steps/s of the LightningModule vs a bare PyTorch loop (same model, loader,
    optimizer), alternating bare and Lightning runs for `--rounds` rounds, and how fast the SHAPES
    loader delivers images vs how fast the model eats them."""
    import lightning as L

    from .callbacks import TrainThroughput
    from .data import ShapesData
    from .module import ImageClassifier

    data = ShapesData(name="shapes", num_train=args.batch_size * (args.iters + args.warmup), batch_size=args.batch_size)
    data.setup()

    def fresh_model():
        torch.manual_seed(0)
        return timm.create_model("shunted_nano", num_classes=data.num_classes)

    def bare() -> float:
        model = fresh_model().train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)  # as the module's
        for i, (x, y) in enumerate(data.train_dataloader()):
            if i == args.warmup:
                start = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
        return args.iters / (time.perf_counter() - start)

    def lightning() -> float:
        timer = TrainThroughput(warmup_batches=args.warmup)
        trainer = L.Trainer(
            accelerator="cpu",
            max_epochs=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            limit_val_batches=0,
            callbacks=[timer],
        )
        recipe = {**OmegaConf.to_container(OmegaConf.load(OPTIM_DEFAULTS)), "label_smoothing": 0.0, "warmup_epochs": 0}
        module = ImageClassifier(fresh_model(), data.num_classes, **recipe)
        trainer.fit(module, datamodule=data)
        return timer.images_per_sec / args.batch_size

    bare()  # the process's first run pays for allocator growth and oneDNN kernel creation: not counted
    runs = {"bare": [], "lightning": []}
    for i in range(args.rounds):
        order = ("bare", "lightning") if i % 2 == 0 else ("lightning", "bare")
        for name in order:
            runs[name].append(bare() if name == "bare" else lightning())
        print(
            f"round {i + 1}/{args.rounds}: bare {runs['bare'][-1]:.2f}, Lightning {runs['lightning'][-1]:.2f} steps/s"
        )
    bare_steps, lightning_steps = (statistics.median(runs[k]) for k in ("bare", "lightning"))

    start = time.perf_counter()
    loaded = sum(len(x) for x, _ in data.train_dataloader())
    loader_images = loaded / (time.perf_counter() - start)
    return dict(
        bare_steps_per_s=bare_steps,
        lightning_steps_per_s=lightning_steps,
        lightning_vs_bare=lightning_steps / bare_steps,
        lightning_vs_bare_per_round=[a / b for a, b in zip(runs["lightning"], runs["bare"], strict=True)],
        rounds=runs,
        loader_images_per_s=loader_images,
        model_train_images_per_s=bare_steps * args.batch_size,
        loader_vs_model=loader_images / (bare_steps * args.batch_size),
    )


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m shunted_lab.bench", description=__doc__.split("\n\n")[0])

    def csv_list(s: str) -> list[str]:
        return [v for v in s.split(",") if v]

    p.add_argument("--models", type=csv_list, default=["shunted_s"], help="our presets, comma-separated")
    p.add_argument("--attention", type=csv_list, default=["shunted"], help="vit,pvt,swin,shunted")
    p.add_argument("--mlp", type=csv_list, default=["detail_specific"], help="plain,detail_specific,dwconv")
    p.add_argument("--peers", type=csv_list, default=[], help="timm model names, random weights")
    p.add_argument(
        "--cpu-chunk-mib",
        type=lambda s: [float(v) for v in csv_list(s)],
        default=None,
        help="our models' CPU batch-chunk budgets to compare, e.g. 16,0 (default: the model's own)",
    )
    p.add_argument(
        "--ffn-recompute",
        choices=("on", "off"),
        default="off",
        help="on: our FFNs recompute their hidden tensors in backward (the model's ffn_recompute)",
    )
    p.add_argument("--reference", action="store_true", help="add the published formulation with shared weights")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--precision", choices=tuple(PRECISIONS), default="fp32")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3, help="entries measured in turn, this many times each")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--out", type=Path, default=Path("bench.json"), help="JSON output; the markdown goes beside it")
    p.add_argument("--op-times", action="store_true", help="CPU: each op's time in a training step, per entry")
    p.add_argument("--loop-overhead", action="store_true", help="Lightning vs bare loop, and SHAPES loading, instead")
    p.add_argument("--entry", help=argparse.SUPPRESS)  # one entry, in a child process
    args = p.parse_args(argv)
    if args.op_times and args.device != "cpu":
        p.error(f"--op-times needs --device cpu (got {args.device}): CUDA ops run asynchronously; use torch.profiler")
    return args


def run_entry_in_child(entry: dict, argv: list[str]) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "shunted_lab.bench", *argv, "--entry", json.dumps(entry)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark of {label(entry)} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.entry:
        print(json.dumps(measure(json.loads(args.entry), args)))
        return 0
    if args.loop_overhead:
        result = loop_overhead(args)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        meta = dict(vars(args), out=str(args.out), torch=torch.__version__)
        args.out.write_text(json.dumps(dict(meta=meta, loop=result), indent=2))
        print(json.dumps(result, indent=2))
        return 0
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    table_peak = (
        next((v for k, v in GPU_BF16_PEAK_TFLOPS.items() if k in name), None) if device.type == "cuda" else None
    )
    peak, peak_kind = (
        (table_peak, "bf16 spec")
        if table_peak
        else (matmul_peak_tflops(device, PRECISIONS[args.precision]), f"measured {args.precision} matmul")
    )
    todo = entries(args)
    rounds = [[] for _ in todo]
    for i in range(args.rounds):
        for entry, done in zip(todo, rounds, strict=True):
            done.append(run_entry_in_child(entry, argv))
            train, infer = (images_per_s(done[-1][f"{p}_seconds"], args.batch_size) for p in ("train", "infer"))
            print(
                f"round {i + 1}/{args.rounds} {label(entry)}: train {train:.1f} img/s, infer {infer:.1f} img/s",
                flush=True,
            )
    results = [summarise(done, args.batch_size) for done in rounds]
    add_comparisons(results, peak)
    meta = dict(
        vars(args), out=str(args.out), device_name=name, peak_tflops=peak, peak_kind=peak_kind, torch=torch.__version__
    )
    meta.pop("entry")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    table = markdown(results, meta)
    args.out.with_suffix(".md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
