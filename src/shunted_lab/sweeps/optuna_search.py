"""hparams_search=optuna that a rerun continues: the study lives in the sweep directory, and a job is
its trial, by number and by parameters.

Hydra's Optuna sweeper keeps its study in memory and asks `n_trials` new trials on every start, while
the job directories are found again by number (`<n>_<run name>`): a stopped search, rerun, gave job 0
new parameters next to the old result, and resumed trial 1's checkpoint with other parameters
(hydra#1407, lightning-hydra-template#535). Here:

- The study is stored with Optuna's own storage, by default `optuna.db` (SQLite) in the sweep
  directory, so the sweep's directory holds the whole search.
- Trial n runs as job n: its directory keeps its number, and the job records its overrides
  (run_dirs.JOB_FILE), so a directory holding other parameters is set aside, never skipped or resumed.
- A trial left running by a stop or a kill is run again with its stored parameters: its job resumes
  from its checkpoint, or is skipped where its metrics.json was written before the kill.
- New trials are asked until `n_trials` have finished (complete or failed, as Optuna's
  `optimize(n_trials=...)` counts them): a failed trial is a result of its parameters for the sampler
  (a diverged loss), and is not asked again.
- The search space, the fixed overrides, the direction and the optimized metric are the study's
  identity: a rerun that changes any of them is refused in one line naming what changed.
"""

import logging
import sys
from pathlib import Path

import optuna
from hydra.core.utils import JobReturn, JobStatus
from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl, create_params_from_overrides
from omegaconf import OmegaConf
from optuna.trial import Trial, TrialState

from ..config import override_key
from ..exits import EXIT_CONFIG_ERROR, Preempted

log = logging.getLogger(__name__)

STUDY_FILE = "optuna.db"
IDENTITY_KEY = "shunted_lab_identity"  # the study's user attribute holding what a rerun must not change
FINISHED = (TrialState.COMPLETE, TrialState.FAIL)


def default_storage(sweep_dir: str | Path) -> str:
    return f"sqlite:///{Path(sweep_dir).resolve() / STUDY_FILE}"


def changed_keys(stored: dict, now: dict) -> list[str]:
    """What differs between two identities, as `section key` names, e.g. `search space optim.lr`."""
    changed = []
    for section in sorted(stored.keys() | now.keys()):
        a, b = stored.get(section), now.get(section)
        if isinstance(a, dict) and isinstance(b, dict):
            changed += [f"{section} {k}" for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)]
        elif a != b:
            changed.append(section)
    return changed


def numbered_runs(trials: list[Trial]) -> list[slice]:
    """Slices of `trials` whose numbers follow each other: one launch each, its jobs numbered from the first."""
    runs, start = [], 0
    for i in range(1, len(trials) + 1):
        if i == len(trials) or trials[i].number != trials[i - 1].number + 1:
            runs.append(slice(start, i))
            start = i
    return runs


class ResumableSearch(OptunaSweeperImpl):
    def sweep(self, arguments: list[str]) -> None:
        if not isinstance(self.sampler, optuna.samplers.BaseSampler):  # GridSampler arrives as a partial
            self.refuse("hydra.sweeper.sampler: a grid is a multirun (python run.py -m key=a,b), not a search")
        self._process_searchspace_config()
        space, fixed = create_params_from_overrides([*self._parse_sweeper_params_config(), *arguments])
        for name in fixed:
            space.pop(name, None)
        # The command line's own overrides, as typed: Hydra's sweeper rewrites `~key` as `~key=null`,
        # which deletes nothing.
        fixed_overrides = [a for a in arguments if override_key(a) not in space]
        directions = self._get_directions()
        storage = self.storage or default_storage(self.sweep_dir)
        Path(self.sweep_dir).mkdir(parents=True, exist_ok=True)
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # its per-trial lines repeat the sweep's own
        study = optuna.create_study(
            study_name=self.study_name,
            storage=storage,
            sampler=self.sampler,
            directions=directions,
            load_if_exists=True,
        )
        self.check_identity(study, space, fixed, directions, storage)
        finished = self.finished(study)
        log.info("Optuna study %s in %s: %d of %d trials finished", study.study_name, storage, finished, self.n_trials)

        while not Preempted.received:
            batch = self.next_trials(study)
            if not batch:
                break
            overrides = [self.trial_overrides(trial, space, fixed_overrides) for trial in batch]
            returns: list[JobReturn] = []
            for run in numbered_runs(batch):
                returns += self.launcher.launch(overrides[run], initial_job_idx=batch[run.start].number)
            self.tell(study, batch, returns, len(directions))

        if Preempted.received:
            log.warning("search stopped by %s; the same command resumes it", Preempted.received)
            return
        self.save_results(study, len(directions))

    def next_trials(self, study: optuna.Study) -> list[Trial]:
        """Up to n_jobs trials: first those a stop or a kill left running (same numbers, same parameters),
        then new ones while fewer than n_trials are finished or running."""
        finished = self.finished(study)
        if finished >= self.n_trials:
            return []
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        batch = [Trial(study, t._trial_id) for t in running[: self.n_jobs]]
        room = self.n_trials - finished - len(running)
        while len(batch) < self.n_jobs and room > 0:
            batch.append(study.ask())
            room -= 1
        return batch

    def trial_overrides(self, trial: Trial, space: dict, fixed_overrides: list[str]) -> tuple[str, ...]:
        """The trial's parameters (drawn, or read back where it has them) and the fixed overrides."""
        for name, distribution in space.items():
            trial._suggest(name, distribution)
        if self.custom_search_space_extender:
            self.custom_search_space_extender(self.config, trial)
        return (*(f"{name}={value}" for name, value in trial.params.items()), *fixed_overrides)

    def tell(self, study: optuna.Study, batch: list[Trial], returns: list[JobReturn], n_objectives: int) -> None:
        """A job's value completes its trial. A job stopped by a signal (or not started after one) leaves its
        trial running, for the rerun; any other job without a value fails its trial."""
        failed = []
        for trial, ret in zip(batch, returns, strict=True):
            value = ret._return_value if ret.status == JobStatus.COMPLETED else None
            if value is not None:
                values = [float(v) for v in value] if n_objectives > 1 else [float(value)]
                study.tell(trial.number, values)
            elif not Preempted.received:
                study.tell(trial.number, state=TrialState.FAIL)
                failed.append(ret)
        if failed and len(failed) / len(returns) > self.max_failure_rate:
            for ret in failed:
                ret.return_value  # noqa: B018 - raises the job's own error, with its traceback
            raise RuntimeError(f"{len(failed)} of {len(returns)} trials returned no value")

    def check_identity(self, study: optuna.Study, space: dict, fixed: dict, directions: list, storage: str) -> None:
        identity = {
            "search space": {name: repr(dist) for name, dist in space.items()},
            "fixed overrides": {name: str(value) for name, value in fixed.items()},
            "direction": directions,
            "optimized_metric": str(OmegaConf.select(self.config, "optimized_metric")),
        }
        stored = study.user_attrs.get(IDENTITY_KEY)
        if stored is None:
            study.set_user_attr(IDENTITY_KEY, identity)
            return
        changed = changed_keys(stored, identity)
        if changed:
            self.refuse(
                f"the Optuna study in {storage} was run with another {', '.join(changed)}; "
                f"give hydra.sweep.dir=<a new directory> to start a new study"
            )

    @staticmethod
    def finished(study: optuna.Study) -> int:
        return len(study.get_trials(deepcopy=False, states=FINISHED))

    @staticmethod
    def refuse(message: str) -> None:
        print(f"config error: {message}", file=sys.stderr)
        sys.exit(EXIT_CONFIG_ERROR)

    def save_results(self, study: optuna.Study, n_objectives: int) -> None:
        """optimization_results.yaml, as Hydra's Optuna sweeper writes it, and the best trial's job number."""
        if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            log.warning("no trial completed")
            return
        if n_objectives == 1:
            best = study.best_trial
            results = {"name": "optuna", "best_params": best.params, "best_value": best.value, "best_job": best.number}
            log.info("best: job %d, %s = %s, %s", best.number, self.config.optimized_metric, best.value, best.params)
        else:
            solutions = [{"params": t.params, "values": t.values} for t in study.best_trials]
            results = {"name": "optuna", "solutions": solutions}
        OmegaConf.save(OmegaConf.create(results), Path(self.sweep_dir) / "optimization_results.yaml")
