"""hydra/launcher=ray: a sweep's jobs side by side, one per (logical) GPU, each in a process of its own."""

import csv
import importlib.util
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import ROOT, SHAPES_TINY, TINY, run_py

from shunted_lab.config import missing_extra
from shunted_lab.exits import EXIT_CONFIG_ERROR, EXIT_PREEMPTED

pytest.importorskip("ray")
from shunted_lab.sweeps.ray_jobs import job_resources  # noqa: E402

# Two logical GPUs on any machine: Ray schedules against them and sets CUDA_VISIBLE_DEVICES (torch sees none).
RAY = ["hydra/launcher=ray", "+hydra.launcher.ray.init.num_gpus=2"]


def sweep(tmp_path: Path, *overrides: str) -> subprocess.Popen:
    return run_py(tmp_path, "-m", *RAY, *TINY, *SHAPES_TINY, f"hydra.sweep.dir={tmp_path}/sweep", *overrides)


def jobs(tmp_path: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in (tmp_path / "sweep").glob("*/metrics.json")}


def test_a_job_asks_for_one_gpu_and_its_cpus_or_without_gpus_for_every_cpu():
    assert job_resources({"num_gpus": None, "num_cpus": None}, {"GPU": 8, "CPU": 96}) == dict(
        num_gpus=1, num_cpus=12, max_calls=1
    )
    assert job_resources({"num_gpus": 8, "max_calls": 1}, {"GPU": 8, "CPU": 96})["num_cpus"] == 96
    assert job_resources({}, {"CPU": 2}) == dict(num_gpus=0, num_cpus=2, max_calls=1)


def test_without_the_extra_the_ray_launcher_is_one_line_naming_the_install(monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else find_spec(name, *a))
    assert missing_extra(["-m", "hydra/launcher=ray"]) == (
        'hydra/launcher=ray needs Ray and Hydra\'s Ray launcher, which are not installed; pip install -e ".[ray]" '
        "installs them"
    )
    assert missing_extra(["-m", "hydra/launcher=slurm"]) is None
    # run.py says it before anything else, in one line, with the config error's exit code.
    hide = "import importlib.util as u; f = u.find_spec; u.find_spec = lambda n, *a: None if n == 'ray' else f(n, *a)"
    argv = "sys.argv = ['run.py', '-m', 'hydra/launcher=ray']"
    run = f"import runpy, sys; {argv}; runpy.run_path({str(ROOT / 'run.py')!r}, run_name='__main__')"
    proc = subprocess.run([sys.executable, "-c", f"{hide}; {run}"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == EXIT_CONFIG_ERROR
    assert proc.stderr.strip().splitlines() == ["config error: " + missing_extra(["hydra/launcher=ray"])]


@pytest.mark.slow
def test_jobs_on_two_logical_gpus_run_two_at_a_time_each_in_its_own_process_and_a_failing_job_is_recorded(tmp_path):
    # Batch 400 is larger than the training split: those three jobs fail, the other three finish.
    proc = sweep(tmp_path, "logger=csv_wandb", "data.batch_size=16,400", "seed=0,1,2", "data.num_train=192")
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode != 0
    done = jobs(tmp_path)
    assert sorted(done) == [f"{i}_shunted-detail_specific-seed{i}" for i in range(3)]
    spans = sorted(
        (m["started_at"], m["started_at"] + m["wall_time_s"], m["cuda_visible_devices"]) for m in done.values()
    )
    overlapping = [(a, b) for i, a in enumerate(spans) for b in spans[i + 1 :] if b[0] < a[1]]
    assert overlapping and all(a[2] != b[2] for a, b in overlapping)  # side by side, on different GPUs
    assert all(sum(s[0] <= t < s[1] for s in spans) <= 2 for t, _, _ in spans)  # never more than two at once
    failed = json.loads((tmp_path / "sweep" / "3_shunted-detail_specific-seed0" / "failed.json").read_text())
    assert "data.batch_size=400 is larger than the training split" in failed["error"]
    with open(tmp_path / "sweep" / "summary.csv") as f:
        rows = {row["cell"]: row for row in csv.DictReader(f)}  # written by the jobs as they ended
    assert rows["data.batch_size=16"]["seeds"] == "3"  # one cell, its seeds averaged
    assert "larger than the training split" in rows["data.batch_size=400"]["failed"]
    runs = [m["wandb"] for m in done.values()]
    assert len({run["id"] for run in runs}) == 3  # no W&B run shared by two jobs
    assert {run["group"] for run in runs} == {"shunted_nano-shapes-shunted-detail_specific"}  # a cell's seeds, grouped


@pytest.mark.slow
def test_a_stop_signal_to_a_ray_sweep_saves_its_running_jobs_and_the_rerun_completes_it(tmp_path):
    step = [
        "+callbacks.step._target_=helpers.StepFile",
        f"+callbacks.step.path={tmp_path}/step",
        "+callbacks.step.delay=0.3",  # 20 steps: 6 s a job, well past the signal 2 s into the first one's
    ]
    command = ["seed=0,1", "data.num_train=320", "callbacks.periodic_checkpoint.every_n_train_steps=100000", *step]
    proc = sweep(tmp_path, *command)
    deadline = time.time() + 300
    while not (tmp_path / "step").is_file() or "train" not in (tmp_path / "step").read_text():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[0][-3000:]
        time.sleep(0.2)
    time.sleep(2)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == EXIT_PREEMPTED, output[-3000:]
    stopped = sorted(p.parent.name for p in (tmp_path / "sweep").glob("*/preempted.json"))
    assert stopped and not jobs(tmp_path)  # the running jobs saved their step; none ran to its end
    steps = [json.loads((tmp_path / "sweep" / job / "preempted.json").read_text())["step"] for job in stopped]
    assert any(
        step for step in steps
    )  # the job training at the signal saved its step (another may still have been starting)
    rerun = sweep(tmp_path, *command)
    output, _ = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, output[-3000:]
    done = jobs(tmp_path)
    assert len(done) == 2 and all(m["global_step"] == 320 // 16 for m in done.values())
    assert all(f"{job} was interrupted; resuming from checkpoints/last.ckpt" in output for job in stopped)
