"""Nothing lost: kill -9 and resume, a kill during save, refused checkpoints, NaN guard, bad data, resumed sweeps."""

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from helpers import (
    SHAPES_TINY,
    TINY,
    checkpoint_step,
    compose_cfg,
    image_folder_cfg,
    run_py,
    write_broken_image,
    write_image_folder,
)

from shunted_lab.exits import ConfigError, DataError, NonFiniteLossError
from shunted_lab.run_dirs import JOB_FILE, set_aside_other_job
from shunted_lab.training.checkpoint_io import AtomicCheckpointIO
from shunted_lab.training.fit import train


@pytest.mark.slow
def test_kill_9_mid_epoch_then_resume_continues_the_step_and_the_wandb_run(tmp_path):
    run_dir = tmp_path / "run"
    overrides = [
        *TINY,
        "data.num_train=480",  # 30 steps per epoch
        "data.num_val=64",
        "trainer.max_epochs=3",
        "callbacks.periodic_checkpoint.every_n_train_steps=10",
        "logger=csv_wandb",
        f"hydra.run.dir={run_dir}",
    ]
    proc = run_py(tmp_path, *overrides)
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while checkpoint_step(last) < 40 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # mid-run: a checkpoint at step >= 40 exists, 90 is the end
    proc.wait()
    killed_at = checkpoint_step(last)
    assert 40 <= killed_at < 80, killed_at
    assert not (run_dir / "metrics.json").exists()
    first_wandb_id = (run_dir / "wandb_run_id").read_text()

    resumed = run_py(tmp_path, *overrides, "ckpt_path=last")
    output, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, output[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["global_step"] == 90 and metrics["epochs"] == 3
    assert metrics["wandb"]["id"] == first_wandb_id  # the same W&B run, resumed
    with open(run_dir / "csv" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    val_epochs = [int(r["epoch"]) for r in rows if r.get("val/top1")]
    assert sorted(val_epochs)[:3] == [0, 1, 2] and val_epochs.count(1) == 1  # no epoch run twice or skipped


@pytest.mark.slow
def test_a_kill_during_save_leaves_the_previous_checkpoint_whole(tmp_path):
    script = textwrap.dedent(
        f"""
        import os, signal, torch
        from shunted_lab.training.checkpoint_io import AtomicCheckpointIO
        io = AtomicCheckpointIO()
        path = {str(tmp_path / "last.ckpt")!r}
        io.save_checkpoint({{"global_step": 1, "w": torch.ones(1000)}}, path)
        real_save = torch.save
        def dying_save(obj, f, *args, **kwargs):
            f.write(b"PK\\x03\\x04 half a checkpoint")
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        torch.save = dying_save
        io.save_checkpoint({{"global_step": 2, "w": torch.zeros(1000)}}, path)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL
    saved = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 1 and torch.equal(saved["w"], torch.ones(1000))
    (half,) = tmp_path.glob(".last.ckpt.tmp*")  # the killed process's
    AtomicCheckpointIO().save_checkpoint({"global_step": 3}, tmp_path / "last.ckpt")
    assert not half.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_a_stop_signal_during_a_save_waits_for_the_file_to_be_whole(tmp_path):
    """The run's handler raises to stop (preemption.py); inside torch.save it would break the write."""
    from shunted_lab.exits import Preempted
    from shunted_lab.training.checkpoint_io import AtomicCheckpointIO

    def stop(signum, frame):
        raise Preempted("SIGUSR1")

    previous = signal.signal(signal.SIGUSR1, stop)
    path, written = tmp_path / "last.ckpt", []
    real_save = torch.save

    def signalled_save(obj, f, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGUSR1)  # mid-write
        real_save(obj, f, *args, **kwargs)
        written.append(True)

    try:
        torch.save = signalled_save
        with pytest.raises(Preempted):
            AtomicCheckpointIO().save_checkpoint({"global_step": 3, "w": torch.ones(1000)}, path)
    finally:
        torch.save = real_save
        signal.signal(signal.SIGUSR1, previous)
    assert written and torch.load(path, weights_only=True)["global_step"] == 3


class Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize("key", ["ckpt_path", "model.checkpoint"])
def test_checkpoints_that_run_code_are_refused(tmp_path, key):
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hook": Payload()}, evil)
    with pytest.raises(ConfigError, match=rf"{key}=.*evil.ckpt' would import \['posix.system'\] when loaded; refusing"):
        train(compose_cfg(tmp_path, f"{key}={evil}"))


def test_corrupt_checkpoint_is_reported(tmp_path):
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ConfigError, match=r"ckpt_path: .*corrupt.ckpt is not a readable PyTorch checkpoint"):
        train(compose_cfg(tmp_path, f"ckpt_path={corrupt}"))


def test_non_finite_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    cfg = compose_cfg(
        tmp_path,
        "callbacks.periodic_checkpoint.every_n_train_steps=2",
        "+callbacks.poison._target_=helpers.PoisonWeights",
        "+callbacks.poison.at_step=3",
    )
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    with pytest.raises(NonFiniteLossError, match=rf"loss is nan at global step 4 .*last good checkpoint: {last}"):
        train(cfg)
    saved = torch.load(last, weights_only=True)
    assert saved["global_step"] == 2
    assert all(torch.isfinite(t).all() for t in saved["state_dict"].values() if t.is_floating_point())
    assert not (Path(cfg.paths.output_dir) / "metrics.json").exists()


def test_a_non_finite_loss_is_read_a_step_late_but_named_with_its_own_step(tmp_path):
    # No checkpoint is due: the guard reads step 2's loss at step 3's end (no host sync per step).
    cfg = compose_cfg(tmp_path, "+callbacks.poison._target_=helpers.PoisonWeights", "+callbacks.poison.at_step=1")
    with pytest.raises(
        NonFiniteLossError, match=r"loss is nan at global step 2 \(epoch 0, batch 1\); last good checkpoint: none"
    ):
        train(cfg)
    assert not (Path(cfg.paths.output_dir) / "checkpoints").exists()


@pytest.mark.parametrize("pipeline", ["workers", "device"])
def test_corrupt_image_names_the_file_or_is_skipped_and_counted(tmp_path, caplog, pipeline):
    write_image_folder(tmp_path / "images")
    bad = write_broken_image(tmp_path / "images")
    with pytest.raises(ValueError, match=rf"cannot read image {bad}"):
        train(image_folder_cfg(tmp_path, f"data.pipeline={pipeline}"))
    skip = [f"data.root={tmp_path}/images", "data.skip_bad_images=true", f"data.pipeline={pipeline}"]
    train(image_folder_cfg(tmp_path / "skip", *skip))
    assert f"skipping unreadable image {bad}" in caplog.text
    assert "skipped 1 unreadable of 13 images" in caplog.text


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda root: (root / "train" / "cat").mkdir(parents=True), r"train/ has empty class folders \['cat'\]"),
        (lambda root: (root / "val").rename(root / "validation"), r"has no val/ folder"),
        (lambda root: (root / "val" / "fox").rename(root / "val" / "wolf"), r"train/ and val/ hold different classes"),
    ],
)
def test_bad_image_folders_are_reported_before_training(tmp_path, make, match):
    write_image_folder(tmp_path / "images", classes=("dog", "fox"))
    make(tmp_path / "images")
    with pytest.raises(ConfigError, match=match):
        train(image_folder_cfg(tmp_path))
    assert not (tmp_path / "out").exists()


def test_a_job_directory_left_by_a_job_with_other_overrides_is_set_aside_whole(tmp_path):
    job = tmp_path / "0_shunted-detail_specific-seed0"
    (job / ".hydra").mkdir(parents=True)
    (job / "checkpoints").mkdir()
    (job / "checkpoints" / "last.ckpt").write_bytes(b"trained with lr 0.001")
    (job / "metrics.json").write_text('{"val/top1": 0.5}')
    (job / "run.log").write_text("this job's log, open\n")
    (job / JOB_FILE).write_text(json.dumps({"overrides": ["optim.lr=0.001", "seed=0"]}))
    assert set_aside_other_job(job, ["seed=0", "optim.lr=0.001"]) is None  # the same job, in another order
    kept = set_aside_other_job(job, ["optim.lr=0.003", "seed=0"])
    assert kept == job / "superseded" / "0"
    assert sorted(p.name for p in job.iterdir()) == [".hydra", "run.log", "superseded"]
    assert (kept / "checkpoints" / "last.ckpt").read_bytes() == b"trained with lr 0.001"
    assert sorted(p.name for p in kept.iterdir()) == ["checkpoints", JOB_FILE, "metrics.json"]
    assert set_aside_other_job(job, ["optim.lr=0.003", "seed=0"]) is None  # nothing of another job is left


@pytest.mark.slow
def test_a_rerun_skips_complete_jobs_reruns_the_rest_and_never_takes_the_results_of_other_parameters(tmp_path):
    """Job 2 lost its metrics.json (as if killed before its end): it runs again. Job 0 gets other
    parameters, as an unseeded search's rerun gives trial 0: it trains afresh, its earlier files kept
    aside. Job 1, the same job and complete, is skipped."""
    command = [*TINY, *SHAPES_TINY, "logger=csv", "hydra.mode=MULTIRUN", f"hydra.sweep.dir={tmp_path}/sweep"]
    assert run_py(tmp_path, *command, "optim.lr=0.001,0.002,0.004").wait(timeout=600) == 0
    changed, kept, lost = sorted((tmp_path / "sweep").glob("*/metrics.json"))
    kept_before = kept.read_text()
    lost.unlink()
    rerun = run_py(tmp_path, *command, "optim.lr=0.003,0.002,0.004")
    output, _ = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, output[-3000:]
    assert json.loads(changed.read_text())["config"]["optim"]["lr"] == 0.003
    old = changed.parent / "superseded" / "0"
    assert json.loads((old / "metrics.json").read_text())["config"]["optim"]["lr"] == 0.001
    assert f"{changed.parent.name} held a job with other overrides; its files are kept in {old}" in output
    assert f"{kept.parent.name} is complete (metrics.json); skipped" in output and kept.read_text() == kept_before
    assert json.loads(lost.read_text())["config"]["optim"]["lr"] == 0.004
    assert "skipped" not in output.split(lost.parent.name)[-1].splitlines()[0]


@pytest.mark.slow
@pytest.mark.parametrize("pipeline", ["workers", "device"])
def test_an_unreadable_image_met_mid_run_ends_in_one_line(tmp_path, pipeline):
    write_image_folder(tmp_path / "images")
    bad = write_broken_image(tmp_path / "images")
    data = ["data=imagefolder", f"data.root={tmp_path}/images", "data.image_size=32", "data.batch_size=4"]
    data.append(f"data.pipeline={pipeline}")
    # In a loader worker: the error comes back behind the worker's traceback.
    proc = run_py(tmp_path, *TINY, *data, "data.num_workers=1", "hydra.run.dir=run")
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 4, output[-3000:]
    errors = [line for line in output.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and f"stopped: cannot read image {bad}" in errors[0]
    assert "Traceback" not in output and not (tmp_path / "run" / "metrics.json").exists()


def test_a_training_split_smaller_than_one_batch_never_looks_like_a_run(tmp_path):
    write_image_folder(tmp_path / "images")  # 3 classes x 4 images
    with pytest.raises(DataError, match=r"data.batch_size=64 is larger than the training split \(12 images\)"):
        train(image_folder_cfg(tmp_path, "data.batch_size=64"))
    assert not (tmp_path / "out" / "metrics.json").exists()
