"""The graph mode against eager: the same seeded run twice through run.py, with validations in the
middle of the fit (where Lightning frees gradients) and the val/test evaluation after it (after
Lightning's teardown moved the module), their scores side by side. Exit 1 when they differ by more
than bf16 noise: `--top1-tolerance` (absolute) and `--loss-tolerance` (relative).

    python benchmarks/graph_vs_eager.py --out /tmp/graph_vs_eager     # on a GPU: compile=cudagraphs, bf16

On the CPU nothing is captured (compile=cudagraphs-eager runs the graphed step's code eagerly, in
fp32), and the two runs must agree exactly: that is the script's dry run. Writes <out>.json and <out>.md.
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch
from harness import read_metrics, run_py, write_result

KEYS = ("val/top1", "val/loss", "test/top1", "test/loss")


def run(mode: str, root: Path, overrides: list[str]) -> dict:
    run_py(f"paths.root_dir={root}", "logger=csv", f"compile={mode}", *overrides, cwd=root, what=f"compile={mode}")
    return read_metrics(root)


def main() -> int:
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", default="cudagraphs" if cuda else "cudagraphs-eager")
    p.add_argument("--num-train", type=int, default=4096 if cuda else 512)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--top1-tolerance", type=float, default=0.03 if cuda else 0.0)
    p.add_argument("--loss-tolerance", type=float, default=0.05 if cuda else 0.0)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    overrides = [
        f"data.num_train={args.num_train}",
        "data.num_val=512",
        "data.num_test=512",
        f"trainer.max_epochs={args.epochs}",
        "+trainer.val_check_interval=0.5",  # validations inside the fit, between graph replays
        *(["trainer=gpu"] if cuda else []),  # bf16-mixed
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        results = {}
        for mode in ("false", args.mode):
            (Path(tmp) / mode).mkdir()
            results[mode] = run(mode, Path(tmp) / mode, overrides)
            # kept as each run ends: a call cut short during the second run still brings back the first
            args.out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    eager, graphed = results["false"], results[args.mode]
    failures = []
    lines = [
        f"`python benchmarks/graph_vs_eager.py {' '.join(sys.argv[1:])}`: overrides `{' '.join(overrides)}`",
        "",
        f"| | eager | compile={args.mode} | difference | tolerance |",
        "|---|---|---|---|---|",
    ]
    for key in KEYS:
        a, b = eager[key], graphed[key]
        diff = abs(a - b) if "top1" in key else abs(a - b) / max(abs(a), 1e-12)
        tolerance = args.top1_tolerance if "top1" in key else args.loss_tolerance
        kind = "" if "top1" in key else " (relative)"
        lines.append(f"| {key} | {a:.4f} | {b:.4f} | {diff:.4f}{kind} | {tolerance} |")
        if diff > tolerance:
            failures.append(key)
    lines += ["", f"CUDA graphs captured: {graphed.get('cuda_graphs')}; global steps {eager['global_step']} and "]
    lines[-1] += f"{graphed['global_step']}."
    if eager["global_step"] != graphed["global_step"]:
        failures.append("global_step")
    verdict = f"FAILED: {', '.join(failures)} differ beyond the tolerance" if failures else "Agree within tolerance."
    lines.append(verdict)
    write_result(args.out, results, "\n".join(lines))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
