"""The same run at several commits, side by side on this machine: wall time from the outside, the run's
own training images/s and its scores. Each commit is unpacked with `git archive` and run from there
(its own run.py and package on PYTHONPATH), in a fresh root, so every run generates its data as a
new user's first run does. Rounds alternate the commits, so that a machine whose speed drifts slows
them alike.

    python benchmarks/default_run_ab.py --commits fda4078,HEAD --out benchmarks/results/cpu_default_run_ab \\
        -- attention=shunted mlp=detail_specific
    python benchmarks/default_run_ab.py --commits ee4d83e,fda4078,HEAD --rounds 2 \\
        --out benchmarks/results/cpu_throughput_ab -- logger=csv data.num_train=3000 trainer.max_epochs=2

Arguments after `--` are the run's (W&B, without credentials, goes offline as in any run). Writes
<out>.json and <out>.md.
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from harness import ROOT, read_metrics, run_env, run_py, write_result

SCORES = ("val/top1", "test/top1", "val/miou", "test/miou")


def unpack(commit: str, into: Path) -> str:
    sha = subprocess.run(["git", "rev-parse", "--short", commit], cwd=ROOT, capture_output=True, text=True, check=True)
    sha = sha.stdout.strip()
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", sha], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return sha


def run_once(tree: Path, root: Path, overrides: list[str]) -> dict:
    env = run_env(PYTHONPATH=str(tree / "src"))
    find = "import shunted_lab; print(shunted_lab.__file__)"
    where = subprocess.run([sys.executable, "-c", find], env=env, capture_output=True, text=True)
    if not Path(where.stdout.strip()).is_relative_to(tree):  # an installed copy would shadow the commit's
        raise SystemExit(f"the commit's package is not the one imported: {where.stdout.strip() or where.stderr}")
    finished = run_py(
        f"paths.root_dir={root}", *overrides, cwd=root, tree=tree, env=env, what=f"the run at {tree.name}"
    )
    metrics = read_metrics(root)
    out = {**finished._asdict(), "train_images_per_s": metrics["train/images_per_sec"]}
    out |= {k: metrics[k] for k in SCORES if k in metrics}
    return out


def markdown(commits: list[str], runs: dict, command: str) -> str:
    scores = [k for k in SCORES if any(k in r for rs in runs.values() for r in rs)]
    lines = [
        f"`{command}`",
        "",
        "| commit | rounds | wall s (each) | wall vs first | train img/s (each) | peak RSS MB (each) | "
        + " | ".join(scores)
        + " |",
        "|---|---|---|---|---|---|" + "---|" * len(scores),
    ]
    base = statistics.median(r["wall_s"] for r in runs[commits[0]])
    for commit in commits:
        rs = runs[commit]
        wall = statistics.median(r["wall_s"] for r in rs)
        each = ", ".join(f"{r['wall_s']:.0f}" for r in rs)
        speed = ", ".join(f"{r['train_images_per_s'] or 0:.1f}" for r in rs)  # 0: too few steps to time
        rss = ", ".join(f"{r['peak_rss_mb']:.0f}" for r in rs)
        values = [", ".join(f"{r[k]:.3f}" for r in rs if k in r) for k in scores]
        row = [commit, str(len(rs)), each, f"{wall / base:.2f}", speed, rss, *values]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    argv = sys.argv[1:]
    overrides = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--commits", required=True, help="comma-separated commits; the first is the baseline")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        trees = {}
        for commit in args.commits.split(","):
            sha = unpack(commit, Path(tmp) / "trees" / commit)
            trees[f"{commit} ({sha})" if sha != commit else commit] = Path(tmp) / "trees" / commit
        runs = {name: [] for name in trees}
        for i in range(args.rounds):
            for name, tree in trees.items():
                root = Path(tmp) / "runs" / f"{i}-{tree.name}"
                root.mkdir(parents=True)
                runs[name].append(run_once(tree, root, overrides))
                print(f"round {i + 1}/{args.rounds} {name}: {runs[name][-1]}", flush=True)
    command = "python benchmarks/default_run_ab.py " + " ".join(sys.argv[1:])
    write_result(args.out, {"command": command, "runs": runs}, markdown(list(runs), runs, command))


if __name__ == "__main__":
    main()
