"""Where runs and sweeps write, what they are called, and the files every part reads back.

A run directory holds metrics.json (the run's result), checkpoints/ (best and last.ckpt) and its
logs; a sweep directory holds one job directory per job and the sweep's report. The Hydra
resolvers registered here name those directories before Hydra's runtime config exists.
"""

import hashlib
import json
import os
from pathlib import Path

from omegaconf import OmegaConf

HEADLINE = {"classification": "top1", "segmentation": "miou"}  # an objective's val/<headline>, test/<headline>
METRICS_FILE = "metrics.json"  # a finished run's (or task's) numbers and its resolved config
FAILED_FILE = "failed.json"  # a sweep job that failed: its one-line error and overrides
PREEMPTED_FILE = "preempted.json"  # a run stopped by a signal: the signal, the step saved, how to resume
WANDB_ID_FILE = "wandb_run_id"  # a resumed run continues this W&B run
JOB_FILE = "job.json"  # a sweep job's overrides, written as it starts: a rerun resumes the same job only
SUPERSEDED_DIR = "superseded"  # what a job with other overrides left in a job directory, kept
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
# Written into a job directory after training, by `task=eval` and by the analysis; the sweep report
# turns their numbers into columns named "<prefix>:<key>".
EVAL_FILE = "eval.json"
ANALYSIS_FILE = "analysis/analysis.json"
AGENT_SWEEP_PREFIX = "wandb-"  # logs/multirun/wandb-<sweep id>: the directory of a W&B agent's sweep

# conf/paths: the launch directory, resolvable before Hydra's runtime config exists (in the sweeper).
OmegaConf.register_new_resolver("cwd", os.getcwd, replace=True)


def agent_sweep_id() -> str | None:
    """The W&B sweep whose agent started this process (`wandb agent` sets WANDB_SWEEP_ID), if any."""
    return os.environ.get("WANDB_SWEEP_ID") or None


def run_dir(log_dir: str, run: str, overrides: str) -> str:
    """hydra.run.dir: logs/runs/<run>, or for a job a W&B agent started logs/multirun/wandb-<sweep id>/<its
    overrides>: the same overrides find the same directory."""
    sweep = agent_sweep_id()
    if not sweep:
        return f"{log_dir}/runs/{run}"
    name = overrides.replace("/", "_") or "defaults"  # a path in a value must not nest directories
    if len(name) > 120:
        name = f"{name[:100]}-{hashlib.sha1(overrides.encode()).hexdigest()[:8]}"
    return f"{log_dir}/multirun/{AGENT_SWEEP_PREFIX}{sweep}/{name}"


OmegaConf.register_new_resolver("run_dir", run_dir, replace=True)


def sweep_id_of(sweep_dir: Path) -> str:
    """A sweep's id: a W&B agent's own, or the directory's name and a hash of its path (two machines
    logging sweeps of one name to one W&B project keep them apart)."""
    sweep_dir = Path(sweep_dir).resolve()
    if sweep_dir.name.startswith(AGENT_SWEEP_PREFIX):
        return sweep_dir.name.removeprefix(AGENT_SWEEP_PREFIX)
    return f"{sweep_dir.name[:48]}-{hashlib.sha1(str(sweep_dir).encode()).hexdigest()[:6]}"


def sweep_tag(sweep_id: str) -> str:
    """The W&B tag of every run of a sweep: its jobs' and its report run's."""
    return f"sweep={sweep_id}"


def last_checkpoint(run: str | Path) -> Path:
    return Path(run) / CHECKPOINT_DIR / LAST_CHECKPOINT


def resolve_resume_path(ckpt_path: str | None, output_dir: str | Path) -> str | None:
    """`last` means this run directory's checkpoints/last.ckpt (rerun with hydra.run.dir=<that run>)."""
    if ckpt_path != "last":
        return ckpt_path
    last = last_checkpoint(output_dir)
    if not last.is_file():
        raise FileNotFoundError(
            f"ckpt_path=last: no {last}; point hydra.run.dir at the run to resume, or give ckpt_path=<file>"
        )
    return str(last)


def set_aside_other_job(job_dir: Path, overrides: list[str]) -> Path | None:
    """Move what an earlier job with other overrides left in `job_dir` into superseded/<n>/, and return
    that folder; None where the directory holds no other job's files.

    A sweep's job directory is named by its number and run name, and a search (Optuna) can give the
    same number other parameters on a rerun: its result must not be skipped over as this job's, nor
    its checkpoint resumed with other parameters, nor its files overwritten. Hydra's own record
    (.hydra/, already this job's) and the open log stay. A directory from before job.json existed
    is trusted as before."""
    record = job_dir / JOB_FILE
    if not record.is_file() or sorted(json.loads(record.read_text())["overrides"]) == sorted(overrides):
        return None
    kept = job_dir / SUPERSEDED_DIR / str(len(list((job_dir / SUPERSEDED_DIR).glob("*"))))
    kept.mkdir(parents=True)
    for path in job_dir.iterdir():
        if path.name not in (".hydra", SUPERSEDED_DIR) and path.suffix != ".log":
            path.rename(kept / path.name)
    return kept
