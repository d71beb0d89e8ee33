"""The cost of one segmentation training step: peak memory and step time of a preset under the Semantic
FPN head, at the ADE20K crop size by default (150 classes, 512 x 512, batch 2 per device).

    python benchmarks/segmentation_step.py --out benchmarks/results/cpu_segmentation_shunted_s_512_b2
    python benchmarks/segmentation_step.py --device cuda --precision bf16 --modes eager,compile --batch-size 8 --out ...

`--model` is a model config (conf/model: nano, shunted_t, shunted_s, shunted_b).

Each mode runs in a process of its own (so that peak RSS is that mode's): the model as
`python run.py objective=segmentation model=<preset>` builds it, AdamW, `--steps` training steps on
random images and labels (forward, cross-entropy with ignore index, backward, optimizer step), the
first one timed apart. `compile` compiles the backbone's blocks as `compile=true` does; `cudagraphs` and
`cudagraphs-eager` run the step as `compile=cudagraphs|cudagraphs-eager` does (after 3 eager steps,
one CUDA graph replay: give --steps 8 or more). Reported per
mode: the process's peak RSS (ru_maxrss: the model, the optimizer state and the step's activations,
over the Python and library baseline given beside it), the median step after the first, and on CUDA
the peak allocated GPU memory. Writes <out>.json and <out>.md.
"""

import argparse
import json
import resource
import statistics
import subprocess
import sys
from pathlib import Path

from harness import ROOT, write_result


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def measure(args) -> dict:
    """One mode, in this process."""
    import torch
    import torch.nn.functional as F
    from hydra import compose, initialize_config_dir

    from shunted_lab.bench.measure import optimizer_step, timed
    from shunted_lab.config import CONF_DIR, GRAPH_MODES
    from shunted_lab.models.factory import build_model
    from shunted_lab.training.graphs.engine import GraphContext, GraphedAdamW

    baseline = rss_mib()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "config", overrides=["objective=segmentation", f"model={args.model}", f"attention={args.attention}"]
        )
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = build_model(cfg, args.classes).to(device).train()
    if args.mode in ("compile", "cudagraphs"):
        model.compile_blocks(backend=args.compile_backend)
    graphed = args.mode in GRAPH_MODES
    if graphed:
        optimizer = GraphedAdamW(model.parameters(), lr=1e-4, graphs=GraphContext(device))
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    images = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device)
    labels = torch.randint(0, args.classes, (args.batch_size, args.image_size, args.image_size), device=device)
    labels[:, :8] = 255  # some ignored pixels, as a padded crop has
    dtype = {"bf16": torch.bfloat16, "fp32": None}[args.precision]
    built = rss_mib()

    def loss_and_backward():
        loss = F.cross_entropy(model(images), labels, ignore_index=255)
        loss.backward()
        return loss

    losses = []

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            losses.append(optimizer_step(optimizer, loss_and_backward))  # the same tensors every step

    times = timed(step, warmup=0, iters=args.steps, device=device)  # the first step timed too, and kept apart
    loss = losses[-1]
    return {
        "mode": args.mode,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "baseline_rss_mib": baseline,
        "built_rss_mib": built,
        "peak_rss_mib": rss_mib(),
        "first_step_s": times[0],
        "step_s": statistics.median(times[1:] or times),  # the graph modes' warm-up and capture steps aside
        "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None,
        "loss": float(loss),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="shunted_s")
    parser.add_argument("--attention", default="shunted")
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--classes", type=int, default=150)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument(
        "--modes", default="eager", help="comma-separated: eager, compile, cudagraphs, cudagraphs-eager"
    )
    parser.add_argument("--compile-backend", default="inductor")
    parser.add_argument("--mode", help=argparse.SUPPRESS)  # one mode, in a child process
    parser.add_argument("--out", required=True, help="path without suffix: <out>.json and <out>.md")
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(measure(args)))
        return
    rows = []
    keys = ("model", "attention", "image_size", "batch_size", "classes", "steps", "device", "precision")
    keys += ("compile_backend", "out")
    same = [part for k in keys for part in (f"--{k.replace('_', '-')}", str(getattr(args, k)))]
    for mode in args.modes.split(","):
        proc = subprocess.run(
            [sys.executable, __file__, *same, "--mode", mode], capture_output=True, text=True, cwd=ROOT
        )
        if proc.returncode != 0:
            raise SystemExit(f"mode {mode} failed:\n{proc.stderr[-3000:]}")
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    setup = {k: getattr(args, k) for k in ("model", "attention", "image_size", "batch_size", "classes", "steps")}
    setup |= {"device": args.device, "precision": args.precision, "torch": __import__("torch").__version__}
    lines = [
        f"# Segmentation training step: {args.model} + Semantic FPN, {args.image_size} px, batch {args.batch_size}, "
        f"{args.classes} classes, {args.device}, {args.precision}",
        "",
        f"`python benchmarks/{Path(__file__).name} {' '.join(sys.argv[1:])}`",
        "",
        "| mode | params (M) | peak RSS (MiB) | after building (MiB) | before (MiB) | first step (s) | step (s) "
        "| peak GPU (MiB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        gpu = "-" if r["peak_gpu_mib"] is None else f"{r['peak_gpu_mib']:.0f}"
        lines.append(
            f"| {r['mode']} | {r['params_m']:.1f} | {r['peak_rss_mib']:.0f} | {r['built_rss_mib']:.0f} "
            f"| {r['baseline_rss_mib']:.0f} | {r['first_step_s']:.2f} | {r['step_s']:.2f} | {gpu} |"
        )
    write_result(Path(args.out), {"setup": setup, "modes": rows}, "\n".join(lines))


if __name__ == "__main__":
    main()
