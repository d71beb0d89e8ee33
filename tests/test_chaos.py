"""A grid sweep hit by faults at random moments, each followed by the same command, ends identical to an
undisturbed sweep: every job's numbers and logged history, value for value, and a report listing every
job once.

Seeded: CHAOS_SEED (default 0) draws the schedule, CHAOS_FAULTS (default 5) sets how many faults land.
A failure prints the seed and the schedule; the same seed replays it. The N = 20 measurement:
`CHAOS_FAULTS=20 python -m pytest -n 0 -s -m slow tests/test_chaos.py` (benchmarks/results/chaos_n20.txt).
"""

import csv
import os
import random
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
from helpers import TINY, run_py
from test_preemption import TIMING, differences, results

from shunted_lab.exits import EXIT_PREEMPTED
from shunted_lab.sweeps.jobs import load_jobs

SEED = int(os.environ.get("CHAOS_SEED", "0"))
FAULTS = int(os.environ.get("CHAOS_FAULTS", "5"))
KINDS = ("kill -9", "SIGTERM", "kill -9 in a checkpoint write")


def grid(tmp_path: Path, sweep: Path) -> list[str]:
    """4 jobs of 16 steps, a periodic checkpoint every 3 steps, each write paused 0.2 s halfway."""
    return [
        "-m",
        *TINY,
        "data.num_train=128",
        "data.num_val=32",
        "data.num_test=32",
        "trainer.max_epochs=2",
        "model.drop_path_rate=0.1",  # the model draws random numbers too
        "callbacks.periodic_checkpoint.every_n_train_steps=3",
        "+callbacks.slow_write._target_=helpers.SlowCheckpointWrite",
        f"+callbacks.slow_write.marker={tmp_path / 'writing'}",
        "+callbacks.slow_write.delay=0.2",
        "attention=vit,shunted",
        "seed=0,1",
        f"hydra.sweep.dir={sweep}",
    ]


def run_to_end(tmp_path: Path, command: list[str]) -> float:
    start = time.monotonic()
    proc = run_py(tmp_path, *command)
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output[-3000:]
    return time.monotonic() - start


def fault(tmp_path: Path, command: list[str], kind: str, delay: float) -> str:
    """Start the sweep, wait `delay` s, then fire `kind` at its process group; what happened."""
    marker = tmp_path / "writing"
    proc = run_py(tmp_path, *command, start_new_session=True)
    deadline = time.monotonic() + delay
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    if kind == KINDS[2]:  # the next checkpoint write that starts from now
        marker.unlink(missing_ok=True)
        while proc.poll() is None and not marker.is_file():
            time.sleep(0.005)
    if proc.poll() is not None:
        proc.communicate()
        return f"ended first (exit {proc.returncode})"
    os.killpg(proc.pid, signal.SIGTERM if kind == "SIGTERM" else signal.SIGKILL)
    output, _ = proc.communicate(timeout=120)
    # A SIGTERM before the sweep's handlers are installed (Python starting, Hydra composing) ends it as
    # the default action does, and one after its last check lets it end complete: the rerun copes with both.
    expected = (EXIT_PREEMPTED, -signal.SIGTERM, 0) if kind == "SIGTERM" else (-signal.SIGKILL,)
    assert proc.returncode in expected, output[-3000:]
    where = f", mid-write of {Path(marker.read_text()).name}" if kind == KINDS[2] else ""
    return f"fired, exit {proc.returncode}{where}"


def logged_rows(run_dir: Path) -> Counter:
    """The CSV log's rows (timing aside), with how often each was written: a step logged twice shows.

    A row that held timing only is left out with its timing: whether it is written at all is timing
    too (an epoch resumed with fewer batches left than the throughput's warm-up has no wait share)."""
    with open(run_dir / "csv" / "metrics.csv") as f:
        rows = [frozenset((k, v) for k, v in row.items() if v and k not in TIMING) for row in csv.DictReader(f)]
    return Counter(row for row in rows if {k for k, _ in row} - {"step", "epoch"})


def job_results(sweep: Path) -> dict:
    jobs, _ = load_jobs(sweep)
    return {job.dir.name: (job.status, results(job.dir), logged_rows(job.dir)) for job in jobs}


@pytest.mark.slow
def test_a_sweep_hit_by_random_faults_ends_identical_to_an_undisturbed_one(tmp_path):
    undisturbed = tmp_path / "undisturbed"
    wall = run_to_end(tmp_path, grid(tmp_path, undisturbed))
    expected = job_results(undisturbed)

    rng = random.Random(SEED)
    sweep = tmp_path / "sweep"
    command = grid(tmp_path, sweep)
    # Within a third of the undisturbed sweep's time: each fault leaves the sweep a little further on,
    # so they land in its start-up, in every job and between them, and after it completed in its reruns.
    schedule, landed = [], 0
    while landed < FAULTS and len(schedule) < 4 * FAULTS:
        kind, delay = rng.choice(KINDS), rng.uniform(0.5, wall / 3)
        outcome = fault(tmp_path, command, kind, delay)
        schedule.append(f"{kind} after {delay:.1f} s: {outcome}")
        landed += not outcome.startswith("ended first")
    replay = f"CHAOS_SEED={SEED} CHAOS_FAULTS={FAULTS}; schedule:\n" + "\n".join(schedule)
    assert landed == FAULTS, replay
    run_to_end(tmp_path, command)

    found = job_results(sweep)
    assert sorted(found) == sorted(expected), replay
    for name, (status, numbers, rows) in found.items():
        assert status == "completed", f"{name}: {status}\n{replay}"
        assert differences(numbers, expected[name][1]) == [], f"{name}\n{replay}"
        assert rows == expected[name][2], f"{name}: rows logged twice or missing\n{replay}"
    assert not list(sweep.glob("*/superseded")) and not list(sweep.glob("**/.*.tmp*")), replay
    summary = (sweep / "summary.md").read_text()
    assert "Preempted jobs" not in summary and "Failed or incomplete" not in summary, replay
    print(f"\n{len(found)} jobs compared value for value with the undisturbed sweep; {replay}")
