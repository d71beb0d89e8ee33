"""Stop signals: a signalled run saves its step and exits 75, its rerun ends as an uninterrupted run
would (same seed, deterministic CPU), and preempted sweep jobs are listed, resumed and requeued."""

import csv
import json
import random
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import SHAPES_TINY, TINY, checkpoint_step, compose_cfg, run_py, wandb_records, write_image_folder
from hydra.utils import instantiate
from omegaconf import OmegaConf

from shunted_lab.config import check_config
from shunted_lab.data.readers.pack import main as pack
from shunted_lab.data.resumable import ResumableLoader, ResumableSampler, SeededItems
from shunted_lab.exits import EXIT_PREEMPTED, ConfigError, Preempted, record_stop_signals
from shunted_lab.sweeps.jobs import load_jobs
from shunted_lab.sweeps.write import write_report
from shunted_lab.training.callbacks import RandomStateCheckpoint
from shunted_lab.training.loggers import AppendingCSVLogger
from shunted_lab.training.preemption import StopAgreement, StopSignals

# 30 steps per epoch, 2 epochs; no periodic checkpoint: the only mid-epoch one is the signal's.
RUN = [
    *TINY,
    "logger=csv_wandb",
    "data.num_train=480",
    "data.num_val=64",
    "data.num_test=64",
    "trainer.max_epochs=2",
    "model.drop_path_rate=0.1",  # the model draws random numbers too
    "callbacks.periodic_checkpoint.every_n_train_steps=100000",
]
TIMING = {"train/images_per_sec", "train/data_wait_share", "train/first_step_s", "wall_time_s", "started_at"}


def step_file(tmp_path: Path, delay: float = 0.0, in_validation: bool = False) -> tuple[Path, list[str]]:
    path = tmp_path / "step"
    overrides = ["+callbacks.step._target_=helpers.StepFile", f"+callbacks.step.path={path}"]
    return path, [*overrides, f"+callbacks.step.delay={delay}", f"+callbacks.step.in_validation={in_validation}"]


def train_step_at_least(step: int):
    return lambda words: words[0] == "train" and words[1].isdigit() and int(words[1]) >= step


def signal_when(proc, path: Path, reached, sig: signal.Signals) -> str:
    """Send `sig` once the step file satisfies `reached`; the file's text at that moment."""
    deadline = time.time() + 300
    while proc.poll() is None and time.time() < deadline:
        text = path.read_text() if path.is_file() else ""
        if text and reached(text.split()):
            proc.send_signal(sig)
            return text
        time.sleep(0.01)
    raise AssertionError(f"the run ended or stalled before the signal point: {proc.communicate()[0][-3000:]}")


def stopped_within(proc, seconds: float) -> str:
    start = time.monotonic()
    output, _ = proc.communicate(timeout=120)
    assert time.monotonic() - start < seconds, f"took {time.monotonic() - start:.0f} s to stop"
    assert proc.returncode == EXIT_PREEMPTED, output[-3000:]
    return output


def results(run_dir: Path) -> tuple[dict, dict]:
    """The run's final numbers (timing aside) and its logged history: {(step, column): value}."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    final = {k: v for k, v in metrics.items() if isinstance(v, int | float) and k not in TIMING}
    with open(run_dir / "csv" / "metrics.csv") as f:
        history = {(row["step"], k): v for row in csv.DictReader(f) for k, v in row.items() if v and k not in TIMING}
    return final, history


def differences(run: tuple[dict, dict], reference: tuple[dict, dict]) -> list:
    """What differs between two `results`: (key, this run's, the reference's)."""
    return [
        (key, mine.get(key), theirs.get(key))
        for mine, theirs in zip(run, reference, strict=True)
        for key in sorted(set(mine) | set(theirs), key=str)
        if mine.get(key) != theirs.get(key)
    ]


def rerun(tmp_path: Path, run_dir: Path, *overrides: str) -> str:
    proc = run_py(tmp_path, *RUN, *overrides, f"hydra.run.dir={run_dir}")
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output[-3000:]
    assert f"{run_dir.name} was interrupted; resuming from checkpoints/last.ckpt" in output
    return output


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[dict, dict]:
    tmp_path = tmp_path_factory.mktemp("uninterrupted")
    proc = run_py(tmp_path, *RUN, f"hydra.run.dir={tmp_path}/run")
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output[-3000:]
    return results(tmp_path / "run")


@pytest.mark.slow
@pytest.mark.parametrize(
    "sig,compile",
    # The graph mode's step runs eagerly on the CPU, bit for bit the plain step: its history is the same.
    [(signal.SIGTERM, "false"), (signal.SIGUSR1, "cudagraphs-eager")],
)
def test_a_signal_mid_epoch_saves_that_step_and_the_rerun_ends_as_an_uninterrupted_run(
    tmp_path, sig, compile, uninterrupted
):
    run_dir = tmp_path / "run"
    path, overrides = step_file(tmp_path, delay=0.02)
    overrides.append(f"compile={compile}")
    proc = run_py(tmp_path, *RUN, *overrides, f"hydra.run.dir={run_dir}")
    at = int(signal_when(proc, path, train_step_at_least(40), sig).split()[1])
    output = stopped_within(proc, 30)
    saved = checkpoint_step(run_dir / "checkpoints" / "last.ckpt")
    assert at <= saved <= at + 1, (at, saved)  # the step done at the signal, or the one in progress
    stop = json.loads((run_dir / "preempted.json").read_text())
    assert stop["signal"] == sig.name and stop["step"] == saved and not (run_dir / "metrics.json").exists()
    assert f"stopped by {sig.name}: saved step {saved}" in output
    wandb_id = (run_dir / "wandb_run_id").read_text()
    first = next((run_dir / "wandb").glob("offline-run-*"))
    records = wandb_records(first)  # W&B marks the run preempting, and its exit code is the run's
    assert any(r.WhichOneof("record_type") == "preempting" for r in records)
    assert [r.exit.exit_code for r in records if r.WhichOneof("record_type") == "exit"] == [EXIT_PREEMPTED]

    rerun(tmp_path, run_dir, *overrides)
    final, history = results(run_dir)
    # The learning-rate monitor names the optimizer's class: GraphedAdamW in the graph mode.
    history = {(step, key.replace("GraphedAdamW", "AdamW")): v for (step, key), v in history.items()}
    assert differences((final, history), uninterrupted) == []
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["global_step"] == 60 and metrics["wandb"]["id"] == wandb_id
    assert not (run_dir / "preempted.json").exists()


@pytest.mark.slow
def test_a_run_on_shards_and_the_device_pipeline_signalled_mid_epoch_resumes_to_the_uninterrupted_runs_end(tmp_path):
    """data.format=shards orders the samples by shard runs of (seed, epoch), and data.pipeline=device
    has the workers draw each item's augmentation from its (seed, epoch, index): the batches after the
    resume are the uninterrupted run's, read, decoded and augmented alike."""
    write_image_folder(tmp_path / "images", per_class=16, suffix="jpg")  # 48 training JPEGs: 12 steps an epoch
    pack([str(tmp_path / "images"), str(tmp_path / "shards"), "--samples-per-shard=10", "--workers=1"])
    run = [
        *TINY,
        "data=imagenet",
        "data.format=shards",
        f"data.root={tmp_path}/shards",
        "data.shuffle_shards=2",
        "data.image_size=32",
        "data.batch_size=4",
        "data.num_workers=1",
        "data.pipeline=device",
        "trainer.max_epochs=2",
        "model.drop_path_rate=0.1",
        "callbacks.periodic_checkpoint.every_n_train_steps=100000",
    ]
    whole = run_py(tmp_path, *run, f"hydra.run.dir={tmp_path}/whole")
    output, _ = whole.communicate(timeout=600)
    assert whole.returncode == 0, output[-3000:]
    run_dir = tmp_path / "run"
    path, overrides = step_file(tmp_path, delay=0.05)
    proc = run_py(tmp_path, *run, *overrides, f"hydra.run.dir={run_dir}")
    signal_when(proc, path, train_step_at_least(15), signal.SIGTERM)
    stopped_within(proc, 30)
    assert 15 <= checkpoint_step(run_dir / "checkpoints" / "last.ckpt") < 24
    proc = run_py(tmp_path, *run, *overrides, f"hydra.run.dir={run_dir}")
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0 and "was interrupted; resuming from checkpoints/last.ckpt" in output, output[-3000:]
    assert differences(results(run_dir), results(tmp_path / "whole")) == []


@pytest.mark.slow
def test_a_signal_during_validation_lets_it_finish_and_the_rerun_ends_as_an_uninterrupted_run(tmp_path, uninterrupted):
    run_dir = tmp_path / "run"
    path, overrides = step_file(tmp_path, delay=0.2, in_validation=True)
    proc = run_py(tmp_path, *RUN, *overrides, f"hydra.run.dir={run_dir}")
    signal_when(proc, path, lambda w: w[0] == "validation" and w[1:] == ["30", "1"], signal.SIGTERM)
    stopped_within(proc, 30)
    assert checkpoint_step(run_dir / "checkpoints" / "last.ckpt") == 30
    rerun(tmp_path, run_dir, *overrides)
    assert differences(results(run_dir), uninterrupted) == []  # epoch 0's validation is in the history once


@pytest.mark.slow
def test_a_signal_in_the_evaluation_after_the_fit_stops_at_once_and_the_rerun_only_evaluates(tmp_path, uninterrupted):
    run_dir = tmp_path / "run"
    signalled = ["+callbacks.sig._target_=helpers.SignalSelf", "+callbacks.sig.hook=on_test_end"]
    proc = run_py(tmp_path, *RUN, *signalled, f"hydra.run.dir={run_dir}")
    output = stopped_within(proc, 120)
    assert "stopped by SIGTERM: nothing new to save" in output
    assert checkpoint_step(run_dir / "checkpoints" / "last.ckpt") == 60  # the fit's end was saved
    output = rerun(tmp_path, run_dir)
    assert differences(results(run_dir), uninterrupted) == []


@pytest.mark.slow
@pytest.mark.parametrize("compile", ["true", "cudagraphs"])
def test_a_signal_while_compiling_the_first_step_stops_within_30_s(tmp_path, compile):
    run_dir = tmp_path / "run"
    path, overrides = step_file(tmp_path)
    proc = run_py(tmp_path, *TINY, *SHAPES_TINY, f"compile={compile}", *overrides, f"hydra.run.dir={run_dir}")
    signal_when(proc, path, lambda w: w == ["train", "start"], signal.SIGTERM)  # the first step compiles
    stopped_within(proc, 30)
    assert json.loads((run_dir / "preempted.json").read_text())["checkpoint"] is None
    assert not (run_dir / "checkpoints").exists()


SWEEP = [*TINY, "data.num_train=64", "data.num_val=32", "data.num_test=32", "hydra.mode=MULTIRUN"]


@pytest.mark.slow
def test_a_signal_to_a_multirun_records_the_job_stops_the_sweep_and_the_rerun_completes_it(tmp_path):
    path, overrides = step_file(tmp_path, delay=0.1)
    command = [*SWEEP, *overrides, "attention=vit,shunted", f"hydra.sweep.dir={tmp_path}/sweep"]
    proc = run_py(tmp_path, *command)
    signal_when(proc, path, train_step_at_least(2), signal.SIGTERM)
    output = stopped_within(proc, 30)
    assert "1_shunted-detail_specific-seed0 not started: the sweep was stopped by SIGTERM" in output
    jobs, _ = load_jobs(tmp_path / "sweep")
    assert [j.status for j in jobs] == ["preempted", "incomplete"]
    summary = (tmp_path / "sweep" / "summary.md").read_text()
    preempted, failed = summary.split("## Preempted jobs")[1].split("## Failed or incomplete jobs")
    assert "attention=vit: seed 0: preempted (SIGTERM, step" in preempted and "attention=shunted" in failed

    second = run_py(tmp_path, *command)
    output, _ = second.communicate(timeout=600)
    assert second.returncode == 0, output[-3000:]
    assert "0_vit-detail_specific-seed0 was interrupted; resuming" in output
    assert [j.status for j in load_jobs(tmp_path / "sweep")[0]] == ["completed", "completed"]
    assert "Preempted" not in (tmp_path / "sweep" / "summary.md").read_text()


def submitit_sweep(tmp_path: Path, sig: str) -> list[str]:
    """Two jobs under submitit's local launcher; the first sends itself `sig` after step 2."""
    signalled = ["+callbacks.sig._target_=helpers.SignalSelf", f"+callbacks.sig.signal={sig}"]
    return [*SWEEP, *signalled, "+callbacks.sig.at_step=2,-1", "hydra/launcher=submitit_local"] + [
        f"hydra.sweep.dir={tmp_path}/sweep"
    ]


@pytest.mark.slow
def test_a_preempted_submitit_job_is_reported_and_the_rerun_completes_it(tmp_path):
    command = submitit_sweep(tmp_path, "SIGUSR1")
    first = run_py(tmp_path, *command)
    output, _ = first.communicate(timeout=600)
    assert first.returncode == EXIT_PREEMPTED, output[-3000:]
    assert "preempted: +callbacks.sig.at_step=2: seed 0: preempted (SIGUSR1, step 2 saved)" in output
    assert [j.status for j in load_jobs(tmp_path / "sweep")[0]] == ["preempted", "completed"]

    second = run_py(tmp_path, *command)
    output, _ = second.communicate(timeout=600)
    assert second.returncode == 0, output[-3000:]
    jobs, _ = load_jobs(tmp_path / "sweep")
    assert [j.status for j in jobs] == ["completed", "completed"]
    assert "was interrupted; resuming" in (jobs[0].dir / "run.log").read_text()
    assert "is complete (metrics.json); skipped" in (jobs[1].dir / "run.log").read_text()


@pytest.mark.slow
def test_submitits_own_signal_saves_the_step_then_submitit_requeues_the_job_which_resumes(tmp_path):
    """SLURM's path without SLURM: SIGUSR2 is the signal submitit asks for ahead of the time limit;
    the run saves, hands the signal to submitit's handler, which requeues the job (locally: reruns it)."""
    proc = run_py(tmp_path, *submitit_sweep(tmp_path, "SIGUSR2"))
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output[-3000:]
    jobs, _ = load_jobs(tmp_path / "sweep")
    assert [j.status for j in jobs] == ["completed", "completed"]
    log = (jobs[0].dir / "run.log").read_text()
    assert "stopped by SIGUSR2: saved step 2" in log and "was interrupted; resuming" in log
    assert json.loads((jobs[0].dir / "metrics.json").read_text())["global_step"] == 4
    assert "this job is preempted" in log and "Requeued job" in log  # submitit's own lines


def test_the_training_order_is_a_shuffle_of_seed_and_epoch_and_a_resume_skips_the_batches_trained(tmp_path):
    data = torch.utils.data.TensorDataset(torch.arange(40))

    def epoch_of(loader, epoch):
        loader.sampler.set_epoch(epoch)
        return [b[0].tolist() for b in loader]

    loader = ResumableLoader(SeededItems(data, 7), batch_size=4, sampler=ResumableSampler(data, 4, 7), drop_last=True)
    first, again, second = epoch_of(loader, 0), epoch_of(loader, 0), epoch_of(loader, 1)
    assert first == again and first != second and sorted(sum(first, [])) == list(range(40))
    loader.sampler.set_epoch(1)
    it = iter(loader)
    [next(it) for _ in range(3)]
    state = loader.state_dict()
    assert state == {"epoch": 1, "batches": 3}

    resumed = ResumableLoader(SeededItems(data, 7), batch_size=4, sampler=ResumableSampler(data, 4, 7), drop_last=True)
    resumed.load_state_dict(state)
    assert [b[0].tolist() for b in resumed] == second[3:]
    assert resumed.state_dict() == {"epoch": 1, "batches": 10}
    assert epoch_of(resumed, 2) == epoch_of(loader, 2)  # the skip was for epoch 1 only
    # Lightning counts a checkpoint taken after epoch 1's last batch as epoch 1 done: epoch 2 skips nothing.
    resumed.load_state_dict({"epoch": 1, "batches": 10})
    assert epoch_of(resumed, 2) == epoch_of(loader, 2)


class RandomFlip(torch.utils.data.Dataset):
    def __len__(self):
        return 100

    def __getitem__(self, i):
        return torch.rand(1).item(), np.random.rand(), i


def test_the_csv_log_holds_each_row_once_on_disk_as_soon_as_logged_and_a_row_logged_again_replaces_it(tmp_path):
    def on_disk() -> list[dict]:
        with open(tmp_path / "csv" / "metrics.csv") as f:
            return list(csv.DictReader(f))

    first = AppendingCSVLogger(tmp_path, name="csv", version="")
    for step in range(4):
        first.log_metrics({"train/loss_step": 1.0 / (step + 1)}, step=step)
    first.log_metrics({"val/top1": 0.5}, step=3)  # a new column: the file is rewritten under its new header
    assert [(row["step"], row["val/top1"]) for row in on_disk()] == [
        ("0", ""),
        ("1", ""),
        ("2", ""),
        ("3", ""),
        ("3", "0.5"),
    ]
    # Killed here, resumed from a checkpoint at step 2 by another process: it logs steps 2 and 3 again.
    resumed = AppendingCSVLogger(tmp_path, name="csv", version="")
    resumed.log_metrics({"train/loss_step": 7.0}, step=2)
    resumed.log_metrics({"train/loss_step": 8.0}, step=3)
    resumed.log_metrics({"val/top1": 0.75}, step=3)
    resumed.log_metrics({"train/loss_step": 9.0}, step=4)
    rows = [(row["step"], row["train/loss_step"], row["val/top1"]) for row in on_disk()]
    assert rows == [
        ("0", "1.0", ""),
        ("1", "0.5", ""),
        ("2", "7.0", ""),
        ("3", "8.0", ""),
        ("3", "", "0.75"),
        ("4", "9.0", ""),
    ]
    # A writer that another process's new column passed by (ddp_spawn's stages) appends under it.
    resumed.log_metrics({"lr": 0.1}, step=5)
    first.log_metrics({"train/loss_step": 6.0}, step=6)
    assert [(row["step"], row["lr"], row["train/loss_step"]) for row in on_disk()[-2:]] == [
        ("5", "0.1", ""),
        ("6", "", "6.0"),
    ]


def test_an_items_random_draws_depend_on_seed_epoch_and_index_only_and_leave_the_callers_generators_alone():
    items = SeededItems(RandomFlip(), seed=3)
    torch.manual_seed(0)
    np.random.seed(0)
    expected_torch, expected_numpy = torch.rand(1).item(), np.random.rand()
    torch.manual_seed(0)
    np.random.seed(0)
    a = [items[(0, i)] for i in (5, 9, 5)]
    assert (torch.rand(1).item(), np.random.rand()) == (expected_torch, expected_numpy)
    assert a[0] == a[2] and a[0] != a[1] and items[(1, 5)] != a[0]
    # A loader's batch, fetched in one call, draws what the items draw one by one.
    assert items.__getitems__([(0, 5), (0, 9)]) == a[:2]
    assert (torch.rand(1).item(), np.random.rand()) != (expected_torch, expected_numpy)  # the states moved on ...
    torch.manual_seed(0)
    np.random.seed(0)
    items.__getitems__([(0, 5), (0, 9)])
    assert (torch.rand(1).item(), np.random.rand()) == (expected_torch, expected_numpy)  # ... and not by the batch


def test_the_training_loader_of_a_datamodule_resumes_where_its_checkpoint_says(tmp_path):
    cfg = compose_cfg(tmp_path)
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    assert isinstance(loader, ResumableLoader) and loader.generator is not None
    it = iter(loader)
    next(it)
    state = datamodule.state_dict()
    assert state == {"train_loader": {"epoch": 0, "batches": 1}}
    restored = instantiate(cfg.data)
    restored.setup("fit")
    restored.load_state_dict(state)  # before the loader exists, as Lightning restores a datamodule
    rest = [y.tolist() for _, y in restored.train_dataloader()]
    assert rest == [y.tolist() for _, y in it]


def test_random_states_survive_a_weights_only_checkpoint(tmp_path):
    callback = RandomStateCheckpoint()
    checkpoint = {}
    callback.on_save_checkpoint(None, None, checkpoint)
    expected = torch.rand(3), np.random.rand(3), random.random()
    torch.save(checkpoint, tmp_path / "c.ckpt")
    torch.manual_seed(123)
    np.random.seed(123)
    callback.on_load_checkpoint(None, None, torch.load(tmp_path / "c.ckpt", weights_only=True))
    callback.on_train_start(None, None)
    got = torch.rand(3), np.random.rand(3), random.random()
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1]) and got[2] == expected[2]


def test_with_no_training_under_way_a_signal_stops_at_once_and_the_handlers_are_put_back(tmp_path):
    calls = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: calls.append(signum))
    try:
        with pytest.raises(Preempted, match="stopped by SIGUSR1: nothing new to save") as stopped:
            with StopSignals(tmp_path, ["SIGUSR1"]):
                signal.raise_signal(signal.SIGUSR1)
        assert Preempted.received == "SIGUSR1" and calls == []
        stopped.value.hand_over()  # to the handler that was there before (submitit's, on a cluster)
        assert calls == [signal.SIGUSR1]
        signal.raise_signal(signal.SIGUSR1)  # ours is gone
        assert calls == [signal.SIGUSR1, signal.SIGUSR1]
    finally:
        signal.signal(signal.SIGUSR1, previous)
        Preempted.received = None
    # Ctrl-C's own handler raises KeyboardInterrupt: never handed over.
    Preempted("SIGINT", previous=signal.default_int_handler).hand_over()


def test_a_signal_between_a_sweeps_jobs_is_recorded_and_the_next_run_stops_before_it_starts(tmp_path):
    previous = signal.getsignal(signal.SIGUSR1)
    try:
        record_stop_signals(["SIGUSR1"])
        signal.raise_signal(signal.SIGUSR1)  # the process lives on: the sweep writes its report
        assert Preempted.received == "SIGUSR1"
        with pytest.raises(Preempted, match="stopped by SIGUSR1: nothing new to save"):
            with StopSignals(tmp_path, ["SIGUSR1"]):
                raise AssertionError("the run started")
        Preempted.received = None
        signal.raise_signal(signal.SIGUSR1)  # the sweep's recorder is back once the run is over
        assert Preempted.received == "SIGUSR1"
    finally:
        signal.signal(signal.SIGUSR1, previous)
        Preempted.received = None


def test_a_library_error_raised_while_a_stop_unwinds_is_still_the_stop():
    try:
        try:
            raise Preempted("SIGTERM")
        except Preempted:
            raise RuntimeError("cannot join thread before it is started")  # noqa: B904 (Rich, signalled mid-start)
    except RuntimeError as error:
        assert Preempted.behind(error).signal_name == "SIGTERM"
    assert Preempted.behind(RuntimeError("a failure of its own")) is None


def test_stop_signals_are_checked(tmp_path):
    cfg = compose_cfg(tmp_path)
    OmegaConf.update(cfg, "stop_signals", ["SIGTERM", "SIGKILL"])
    with pytest.raises(ConfigError, match=r"stop_signals=.*SIGKILL.* is not allowed; expected a list of signal names"):
        check_config(cfg)


def test_the_report_lists_preempted_jobs_apart_from_failed_ones(tmp_path):
    for i, (cell, record) in enumerate([("vit", "preempted"), ("pvt", "failed"), ("swin", None)]):
        job = tmp_path / f"{i}_{cell}"
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(f"- attention={cell}\n")
        if record == "preempted":
            stop = {"signal": "SIGUSR2", "step": 40, "checkpoint": "c.ckpt", "resume": "rerun"}
            (job / "preempted.json").write_text(json.dumps(stop))
        elif record == "failed":
            (job / "failed.json").write_text(json.dumps({"error": "ValueError: boom"}))
    rows = {r["cell"]: r for r in write_report(tmp_path)}
    assert rows["attention=vit"]["preempted"] == "seed 0: preempted (SIGUSR2, step 40 saved)"
    assert not rows["attention=vit"]["failed"] and not rows["attention=pvt"]["preempted"]
    assert rows["attention=pvt"]["failed"] == "seed 0: failed (ValueError: boom)"
    summary = (tmp_path / "summary.md").read_text()
    assert summary.index("## Preempted jobs") < summary.index("attention=vit: seed 0: preempted")
    assert "- attention=swin: seed 0: incomplete" in summary.split("## Failed or incomplete jobs")[1]


def _agree(rank: int, port: int, out) -> None:
    """One of two gloo processes: rank 1 is asked to stop at call 2; what each call answers."""
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    agreement = StopAgreement()
    out[rank] = [agreement(rank == 1 and call >= 2) for call in range(5)]
    agreement.close()
    torch.distributed.destroy_process_group()


@pytest.mark.slow  # two spawned processes
def test_ranks_agree_on_a_stop_one_step_after_the_signal_without_a_blocking_collective():
    with torch.multiprocessing.Manager() as manager:
        out = manager.dict()
        port = 30000 + int(torch.randint(0, 1000, ()))
        torch.multiprocessing.spawn(_agree, args=(port, out), nprocs=2)
        assert out[0] == out[1] == [False, False, False, True, True]
