"""A stopped Optuna search, rerun, continues its own study: trial n is job n with the trial's parameters,
interrupted trials run again with theirs, and the search ends at exactly n_trials."""

import json
import math
import signal

import optuna
import pytest
from helpers import SHAPES_TINY, TINY, run_py
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf
from test_preemption import signal_when, step_file, stopped_within, train_step_at_least

from shunted_lab.exits import EXIT_CONFIG_ERROR, Preempted
from shunted_lab.run_dirs import JOB_FILE
from shunted_lab.sweeps.jobs import load_jobs
from shunted_lab.sweeps.optuna_search import STUDY_FILE, ResumableSearch

SPACE = {"optim.lr": "tag(log, interval(1e-4, 1e-1))", "model.drop_path_rate": "interval(0.0, 0.3)"}


class Killed(BaseException):
    """kill -9 of the sweep, as seen from the sweeper: nothing after the launch runs."""


class Launcher:
    """Runs no training: a job's value is a function of its overrides. `stop_at` job numbers raise Killed
    (kill -9) or, once, take a stop signal (the job and those after it in the batch return None)."""

    def __init__(self, kill_at=(), signal_at=()):
        self.kill_at, self.signal_at = set(kill_at), set(signal_at)
        self.launched: list[tuple[int, tuple[str, ...]]] = []

    def launch(self, job_overrides, initial_job_idx):
        returns = []
        for number, overrides in enumerate(job_overrides, start=initial_job_idx):
            if number in self.kill_at:
                self.kill_at.discard(number)
                raise Killed
            if number in self.signal_at:
                self.signal_at.discard(number)
                Preempted.received = "SIGTERM"
            self.launched.append((number, tuple(sorted(overrides))))
            ret = JobReturn()
            ret.status = JobStatus.COMPLETED
            params = dict(o.split("=", 1) for o in overrides)
            ret._return_value = None if Preempted.received else -((math.log10(float(params["optim.lr"])) + 2) ** 2)
            returns.append(ret)
        return returns


def search(tmp_path, launcher, n_trials=5, n_jobs=1, space=SPACE, seed=None) -> ResumableSearch:
    """The sweeper as Hydra sets it up, with a launcher that trains nothing; an unseeded sampler draws
    other parameters on every start, as a new user's search would."""
    sweeper = ResumableSearch(
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=2),
        direction="maximize",
        storage=None,
        study_name="study",
        n_trials=n_trials,
        n_jobs=n_jobs,
        max_failure_rate=0.0,
        search_space=None,
        custom_search_space=None,
        params=OmegaConf.create(space),
    )
    sweeper.config = OmegaConf.create({"optimized_metric": "val/top1"})
    sweeper.sweep_dir = str(tmp_path)
    sweeper.launcher = launcher
    return sweeper


def trials(sweep_dir) -> list[optuna.trial.FrozenTrial]:
    """The trials of the one study stored in the sweep directory."""
    storage = f"sqlite:///{sweep_dir / STUDY_FILE}"
    (study,) = optuna.get_all_study_summaries(storage)
    return optuna.load_study(study_name=study.study_name, storage=storage).trials


def trial_overrides(trial) -> tuple[str, ...]:
    return tuple(sorted(f"{k}={v}" for k, v in trial.params.items()))


@pytest.fixture(autouse=True)
def fresh_process():
    """Each sweeper start below stands for a new process: no stop signal received yet."""
    Preempted.received = None
    yield
    Preempted.received = None


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_a_search_killed_twice_resumes_its_trials_with_their_parameters_and_ends_at_n_trials(tmp_path, n_jobs):
    launcher = Launcher(kill_at=[1, 3])
    for _ in range(2):
        with pytest.raises(Killed):
            search(tmp_path, launcher, n_jobs=n_jobs).sweep([])
    search(tmp_path, launcher, n_jobs=n_jobs).sweep([])

    done = trials(tmp_path)
    assert [t.number for t in done] == [0, 1, 2, 3, 4]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in done)
    # Every launch of job n, the first and any after a kill, had trial n's parameters.
    assert sorted(set(launcher.launched)) == [(t.number, trial_overrides(t)) for t in done]
    assert OmegaConf.load(tmp_path / "optimization_results.yaml").best_job in range(5)


def test_a_stop_signal_leaves_its_trials_running_and_the_rerun_runs_them_as_they_were(tmp_path):
    launcher = Launcher(signal_at=[2])
    search(tmp_path, launcher, n_jobs=2).sweep([])
    first = trials(tmp_path)
    assert [t.state.name for t in first] == ["COMPLETE", "COMPLETE", "RUNNING", "RUNNING"]
    Preempted.received = None  # the rerun is a new process
    search(tmp_path, launcher, n_jobs=2).sweep([])
    done = trials(tmp_path)
    assert [t.state.name for t in done] == ["COMPLETE"] * 5
    assert [t.params for t in done[:4]] == [t.params for t in first]
    assert [n for n, _ in launcher.launched] == [0, 1, 2, 3, 2, 3, 4]  # 2 and 3 again, their own numbers


def test_more_trials_on_rerun_extend_the_same_study(tmp_path):
    search(tmp_path, Launcher(), n_trials=3).sweep([])
    launcher = Launcher()
    search(tmp_path, launcher, n_trials=5).sweep([])
    assert [n for n, _ in launcher.launched] == [3, 4]
    assert len(trials(tmp_path)) == 5


@pytest.mark.parametrize(
    "change, named",
    [
        ({"space": {**SPACE, "optim.lr": "interval(1e-4, 1e-1)"}}, "search space optim.lr"),
        ({"arguments": ["mlp=plain"]}, "fixed overrides mlp"),
    ],
)
def test_a_rerun_that_changes_the_search_is_refused_in_one_line(tmp_path, capsys, change, named):
    search(tmp_path, Launcher(), n_trials=1).sweep(["mlp=detail_specific"])
    sweeper = search(tmp_path, Launcher(), n_trials=2, space=change.get("space", SPACE))
    with pytest.raises(SystemExit) as stop:
        sweeper.sweep(change.get("arguments", ["mlp=detail_specific"]))
    assert stop.value.code == EXIT_CONFIG_ERROR
    message = capsys.readouterr().err.strip()
    assert len(message.splitlines()) == 1 and named in message and "hydra.sweep.dir=" in message
    assert len(trials(tmp_path)) == 1


@pytest.mark.slow
def test_a_stopped_unseeded_search_rerun_with_the_same_command_keeps_every_job_with_its_own_trial(tmp_path):
    """The failure of the old sweeper, replayed: unseeded, 3 trials, SIGTERM inside trial 1, same command."""
    path, steps = step_file(tmp_path, delay=0.1)
    sweep = tmp_path / "sweep"
    command = ["-m", *TINY, *SHAPES_TINY, *steps, "hparams_search=optuna", f"hydra.sweep.dir={sweep}"]
    command += ["hydra.sweeper.n_trials=3", "hydra.sweeper.sampler.seed=null"]
    proc = run_py(tmp_path, *command)
    started = []  # trial 1's training started: the step file is no longer trial 0's

    def in_trial_1(words):
        if words == ["train", "start"] and (sweep / "1_shunted-detail_specific-seed0").is_dir():
            started.append(True)
        return bool(started) and train_step_at_least(2)(words)

    signal_when(proc, path, in_trial_1, signal.SIGTERM)
    stopped_within(proc, 30)
    assert [t.state.name for t in trials(sweep)] == ["COMPLETE", "RUNNING"]

    rerun = run_py(tmp_path, *command)
    output, _ = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, output[-3000:]
    assert "1_shunted-detail_specific-seed0 was interrupted; resuming from checkpoints/last.ckpt" in output
    assert "0_shunted" not in output  # a complete trial is not launched again
    done = trials(sweep)
    jobs, _ = load_jobs(sweep)
    assert [t.state.name for t in done] == ["COMPLETE"] * 3 and [j.status for j in jobs] == ["completed"] * 3
    for trial, job in zip(done, jobs, strict=True):
        assert job.dir.name.startswith(f"{trial.number}_")
        recorded = json.loads((job.dir / JOB_FILE).read_text())["overrides"]
        assert {o for o in recorded if o.split("=")[0] in trial.params} == set(trial_overrides(trial))
        assert job.metrics["config"]["optim"]["lr"] == trial.params["optim.lr"]
        assert job.metrics["val/top1"] == trial.value
        assert not (job.dir / "superseded").exists()
    summary = (sweep / "summary.md").read_text()
    assert all(f"optim.lr={t.params['optim.lr']}" in summary for t in done)
