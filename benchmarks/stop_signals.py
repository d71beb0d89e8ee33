"""How fast a signalled run stops, what it saved, and whether its rerun ends as an uninterrupted run.

    python benchmarks/stop_signals.py --out benchmarks/results/cpu_stop_signals

Runs a tiny SHAPES run (960 training images, batch 16, 2 epochs: 120 steps) once uninterrupted,
then once per case below: the signal is sent from outside when the run reaches the case's point
(the test callback tests/helpers.StepFile writes the step reached), the seconds from the signal to
the process's exit are timed, and the same command is run again to resume. Writes <out>.json and
<out>.md.
"""

import argparse
import csv
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import torch
from harness import ROOT, read_metrics, run_command, run_env, write_result

RUN = [
    "logger=csv",
    "data.batch_size=16",
    "trainer.accelerator=cpu",
    "~callbacks.progress_bar",
    "~callbacks.model_summary",
    "data.num_train=960",
    "data.num_val=64",
    "data.num_test=64",
    "trainer.max_epochs=2",
    "model.drop_path_rate=0.1",
    "callbacks.periodic_checkpoint.every_n_train_steps=100000",
]


def step_at_least(step: int):
    return lambda words: words[0] == "train" and words[1].isdigit() and int(words[1]) >= step


# (case, signal, the step file's words at which it is sent, extra overrides, whether to rerun it)
CASES = [
    ("mid-epoch 1, step 75", "SIGTERM", step_at_least(75), [], True),
    ("mid-epoch 1, step 75", "SIGUSR1", step_at_least(75), [], True),
    ("mid-epoch 0, step 30", "SIGINT", step_at_least(30), [], True),
    (
        "during epoch 0's validation",
        "SIGTERM",
        lambda words: words[:2] == ["validation", "60"],
        ["+callbacks.step.delay=0.2", "+callbacks.step.in_validation=true"],
        True,
    ),
    ("compiling the first step", "SIGTERM", lambda words: words == ["train", "start"], ["compile=true"], False),
]


def run(work: Path, run_dir: Path, *overrides: str) -> subprocess.Popen:
    env = run_env(PYTHONPATH=os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]))
    command = run_command(f"paths.root_dir={work}", *RUN, *overrides)
    with open(work / f"{run_dir.name}.log", "ab") as log:  # the child keeps its own copy of the file
        return subprocess.Popen([*command, f"hydra.run.dir={run_dir}"], cwd=work, env=env, stdout=log, stderr=log)


def results(run_dir: Path) -> tuple[dict, dict]:
    metrics = read_metrics(run_dir)
    timing = {"train/images_per_sec", "train/data_wait_share", "train/first_step_s", "wall_time_s", "started_at"}
    final = {k: v for k, v in metrics.items() if isinstance(v, int | float) and k not in timing}
    with open(run_dir / "csv" / "metrics.csv") as f:
        history = {(row["step"], k): v for row in csv.DictReader(f) for k, v in row.items() if v}
    return final, history


def measure_case(work: Path, index: int, name: str, sig: str, reached, extra: list[str], rerun: bool, reference):
    run_dir, step_file = work / f"case{index}", work / "step"
    step_file.unlink(missing_ok=True)
    watched = ["+callbacks.step._target_=helpers.StepFile", f"+callbacks.step.path={step_file}", *extra]
    proc = run(work, run_dir, *watched)
    words = []
    while proc.poll() is None and not (words and reached(words)):
        words = step_file.read_text().split() if step_file.is_file() else []
        time.sleep(0.005)
    proc.send_signal(getattr(signal, sig))
    sent = time.perf_counter()
    proc.wait(timeout=300)
    seconds = time.perf_counter() - sent
    last = run_dir / "checkpoints" / "last.ckpt"
    row = dict(case=name, signal=sig, signal_at=" ".join(words), exit_code=proc.returncode)
    row["seconds_to_exit"] = round(seconds, 2)
    row["step_saved"] = torch.load(last, weights_only=True)["global_step"] if last.is_file() else None
    if not rerun:  # stopped before its first step: nothing to compare
        return row
    resumed = run(work, run_dir, *watched)
    resumed.wait(timeout=600)
    final, history = results(run_dir)
    row["rerun_exit_code"] = resumed.returncode
    row["rerun_final_step"] = final["global_step"]
    row["rerun_metrics_equal"] = final == reference[0]
    row["rerun_history_equal"] = history == reference[1]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="<out>.json and <out>.md are written")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        run(work, work / "uninterrupted").wait(timeout=600)
        reference = results(work / "uninterrupted")
        rows = [measure_case(work, i, *case, reference) for i, case in enumerate(CASES)]
    keys = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r.get(k, "-")) for k in keys) + " |" for r in rows]
    header = f"# Stop signals on {os.cpu_count()} CPU cores\n\n`python benchmarks/stop_signals.py --out {args.out}`\n\n"
    write_result(args.out, rows, header + "\n".join(lines))


if __name__ == "__main__":
    main()
