"""The Hydra callback that keeps a sweep's report current while the sweep runs (conf/config.yaml:
hydra.callbacks.sweep_report)."""

import logging
import sys
from pathlib import Path

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from ..config import error_line
from ..exits import EXIT_PREEMPTED, Preempted
from ..files import write_json
from ..run_dirs import FAILED_FILE, agent_sweep_id, sweep_id_of
from .wandb_run import log_sweep_summary

log = logging.getLogger(__name__)


def sweep_dir_of(config: DictConfig) -> Path | None:
    """A job's sweep directory: its multirun's, or for a job a W&B agent started its parent (config.run_dir)."""
    if config.hydra.mode == RunMode.MULTIRUN:
        return Path(config.hydra.sweep.dir)
    if agent_sweep_id() is not None:
        return Path(config.hydra.runtime.output_dir).parent
    return None


class SweepReport(Callback):
    """Records failed jobs and rewrites the sweep's report after every job, so the report is
    there even when a job fails (Hydra then ends the sweep with an error after the last job). A sweep
    with preempted jobs (run.py records them) ends with EXIT_PREEMPTED once its report is written.
    Where the jobs log to W&B, the summary and figures go to the sweep's report run too; with
    `wandb_report=true` the W&B Report is built at the end of a multirun (or its spec saved, offline)."""

    def __init__(self, wandb_report: bool = False):
        self.wandb_report = wandb_report

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs) -> None:
        sweep_dir = sweep_dir_of(config)
        if sweep_dir is None:
            return
        job_dir = Path(config.hydra.runtime.output_dir)
        if job_return.status == JobStatus.FAILED:
            error = f"{type(job_return._return_value).__name__}: {error_line(job_return._return_value)}"
            write_json(job_dir / FAILED_FILE, {"error": error, "overrides": list(config.hydra.overrides.task)})
            overrides = " ".join(config.hydra.overrides.task)
            log.error("job %s failed (%s): %s", config.hydra.job.num, overrides, error)
        from .write import write_report  # here, not above: a single run loads this callback, never the report's scipy

        rows = write_report(sweep_dir)
        wandb_cfg = OmegaConf.select(config, "logger.wandb")
        if wandb_cfg is not None:
            sweep_id = config.get("sweep_id") or sweep_id_of(sweep_dir)
            settings = {k: wandb_cfg.get(k) for k in ("project", "entity", "offline")}
            try:
                log_sweep_summary(sweep_dir, rows, sweep_id, settings)
            except Exception as e:  # the report is on disk; a W&B outage must not fail the sweep
                log.warning("sweep summary not logged to W&B: %s", error_line(e))

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        from .write import write_report

        sweep_dir = Path(config.hydra.sweep.dir)
        rows = write_report(sweep_dir)
        log.info("sweep report: %s", sweep_dir / "summary.md")
        for r in rows:
            if r["failed"]:
                log.error("failed: %s: %s", r["cell"], r["failed"])
        preempted = [r for r in rows if r["preempted"]]
        for r in preempted:
            log.warning("preempted: %s: %s", r["cell"], r["preempted"])
        if self.wandb_report:
            from .wandb_report import publish_wandb_report  # a second to import: only when asked

            for line in publish_wandb_report(sweep_dir):
                log.info(line)
        # A launcher or a scheduler reading the exit code reruns the sweep, which resumes the preempted
        # jobs and starts those a signal to this process kept from starting.
        if preempted or Preempted.received:
            log.warning("rerun the same command to complete the sweep")
            sys.exit(EXIT_PREEMPTED)
