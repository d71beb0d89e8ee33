"""A 4-job sweep under hydra/launcher=ray with two logical GPUs, against Hydra's basic launcher: each
job's start and end, and the sweep's wall time.

    python benchmarks/ray_sweep.py --out benchmarks/results/cpu_ray_sweep

On a CPU machine `+hydra.launcher.ray.init.num_gpus=2` declares two GPUs to Ray: each job asks for
one, so two run at once, each with its own CUDA_VISIBLE_DEVICES (torch sees no GPU either way) and
its GPU's share of the CPUs. Jobs: nano on SHAPES, `--num-train` images, one epoch, seeds 0-3.
Writes <out>.json and <out>.md.
"""

import argparse
import tempfile
import time
from pathlib import Path

from harness import read_metrics, run_py, write_result

LAUNCHERS = {"basic": [], "ray": ["hydra/launcher=ray", "+hydra.launcher.ray.init.num_gpus=2"]}


def run_sweep(root: Path, launcher: list[str], overrides: list[str]) -> dict:
    start = time.time()  # the epoch clock: the jobs' started_at is on it
    wall = run_py(
        "-m",
        *launcher,
        f"paths.root_dir={root}",
        *overrides,
        f"hydra.sweep.dir={root}/sweep",
        cwd=root,
        what="the sweep",
    ).wall_s
    jobs = []
    for metrics_file in sorted((root / "sweep").glob("*/metrics.json")):
        m = read_metrics(metrics_file)
        began = m["started_at"] - start
        jobs.append(
            dict(
                job=metrics_file.parent.name,
                start_s=began,
                end_s=began + m["wall_time_s"],
                gpu=m["cuda_visible_devices"],
            )
        )
    return dict(wall_s=wall, jobs=jobs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--num-train", type=int, default=2000)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    overrides = ["logger=csv", f"data.num_train={args.num_train}", "data.num_val=200", "data.num_test=200"]
    overrides += ["trainer.max_epochs=1", "seed=0,1,2,3", "~callbacks.progress_bar"]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, launcher in LAUNCHERS.items():
            root = Path(tmp) / name
            root.mkdir()
            results[name] = run_sweep(root, launcher, overrides)
            print(f"{name}: {results[name]['wall_s']:.0f} s", flush=True)
    command = f"python benchmarks/ray_sweep.py --out {args.out}"
    lines = [
        f"`{command}`: 4 jobs (`{' '.join(overrides)}`); times in seconds from the sweep's start (a job's start is",
        "its training's start, after its process has imported the stack and built the data).",
        "",
        "| launcher | job | start | end | CUDA_VISIBLE_DEVICES |",
        "|---|---|---|---|---|",
    ]
    for name, result in results.items():
        for job in result["jobs"]:
            lines.append(f"| {name} | {job['job']} | {job['start_s']:.1f} | {job['end_s']:.1f} | {job['gpu']} |")
    lines += ["", "| launcher | sweep wall time (s) |", "|---|---|"]
    lines += [f"| {name} | {result['wall_s']:.0f} |" for name, result in results.items()]
    write_result(args.out, dict(command=command, overrides=overrides, **results), "\n".join(lines))


if __name__ == "__main__":
    main()
