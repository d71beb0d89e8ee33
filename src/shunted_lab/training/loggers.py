"""A run's loggers: built from its config (conf/logger), what every task logs to them, and their end;
and the two logger classes the configs name, Lightning's with what this project needs.

Used by training (fit.py) and by the tasks on trained checkpoints (checkpoints/tasks.py).

AppendingCSVLogger: Lightning's CSV writer deletes an existing metrics.csv when it starts, so resuming into a run
directory, or evaluating after `fit` in a process spawned by ddp_spawn, would erase the log of
the earlier process: this one appends to it, under its header. Its rows are written whenever a
checkpoint is saved (and at the end), and only then, so the log on disk never holds a step the
resume (after a stop or a kill -9) logs again; a stopped run drops those it had not written.
"""

import csv
from pathlib import Path

from hydra.utils import instantiate
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from omegaconf import DictConfig, OmegaConf

from ..exits import EXIT_PREEMPTED
from ..run_dirs import WANDB_ID_FILE, sweep_tag
from ..wandb_env import wandb_offline


class AppendingExperimentWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        """Keep an existing metrics.csv (Lightning deletes it here)."""

    def _record_new_keys(self) -> set[str]:
        # Another process of this run (spawned for fit/validate, or before a resume) may have
        # written columns this copy of the writer has never seen: take the header from disk.
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                on_disk = next(csv.reader(f), [])
            self.metrics_keys = sorted(set(self.metrics_keys) | set(on_disk))
        return super()._record_new_keys()


class AppendingCSVLogger(CSVLogger):
    def __init__(self, *args, **kwargs):
        # Rows reach the file at each checkpoint and at the end, never between: the file never holds a
        # step past the checkpoint a resume starts from, which would then be logged twice.
        kwargs.setdefault("flush_logs_every_n_steps", 2**62)
        super().__init__(*args, **kwargs)

    def discard_unsaved(self, resume_step: int) -> None:
        """Drop the unwritten rows that the resume logs again: the run stopped, and resumes at `resume_step`
        (its last checkpoint's global step), whose rows are those of the steps from there on. An epoch's
        end, logged after the checkpoint of its last step under the step before, is not done again: kept."""
        if self._experiment is not None:
            self._experiment.metrics = [row for row in self._experiment.metrics if row.get("step", 0) < resume_step]

    @property
    @rank_zero_experiment
    def experiment(self) -> AppendingExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = AppendingExperimentWriter(log_dir=self.log_dir)
        return self._experiment

    def after_save_checkpoint(self, checkpoint_callback) -> None:
        super().after_save_checkpoint(checkpoint_callback)
        self.save()


class WandbResultsLogger(WandbLogger):
    """Lightning's WandbLogger, whose run also gets, at the end of fit (`log_fit_end`), the best
    checkpoint as a model artifact (`log_model`), a table of validation predictions and a confusion matrix.

    The artifact is the file the atomic checkpoint IO finished writing, copied into W&B's staging area
    when it is logged: ModelCheckpoint deleting a superseded best file later cannot break the upload.
    Lightning's own `log_model` is never used: it would also upload last.ckpt, a resume file.
    """

    def __init__(self, *args, log_model: bool = False, predictions: int = 32, confusion_matrix: bool = True, **kw):
        if kw.get("offline"):  # Lightning says so through WANDB_MODE, which wandb reads once per process
            kw["mode"] = "offline"
        # W&B's own end-of-run history and summary would bury the run's last lines (run.py says where it wrote).
        kw.setdefault("settings", {"quiet": True})
        super().__init__(*args, log_model=False, **kw)
        self._wandb_init.pop("anonymous")  # Lightning passes it, and wandb warns that it has no effect
        self.upload_best_checkpoint = log_model
        self.num_predictions = predictions
        self.log_confusion_matrix = confusion_matrix

    def log_fit_end(self, media: dict, best_checkpoint: str, metadata: dict) -> None:
        """The best checkpoint's validation `media` (class_predictions.wandb_media), the checkpoint as an artifact."""
        import wandb

        run = self.experiment
        if media:
            run.log(media)
        if self.upload_best_checkpoint and best_checkpoint:
            artifact = wandb.Artifact(f"model-{run.id}", type="model", metadata=metadata)
            artifact.add_file(best_checkpoint, name=Path(best_checkpoint).name)
            run.log_artifact(artifact, aliases=["best", "latest"])


def build_loggers(cfg: DictConfig) -> list:
    loggers = []
    for logger_cfg in (cfg.get("logger") or {}).values():
        logger_cfg = OmegaConf.to_container(logger_cfg, resolve=True)
        if logger_cfg["_target_"].endswith(("WandbLogger", "WandbResultsLogger")):  # ours, or Lightning's
            logger_cfg["offline"] = wandb_offline(logger_cfg["offline"])
            id_file = Path(cfg.paths.output_dir) / WANDB_ID_FILE
            if logger_cfg["id"] is None and id_file.is_file():  # a resumed run continues its W&B run
                logger_cfg.update(id=id_file.read_text().strip(), resume="allow")
            if logger_cfg.get("log_model") is None:  # a sweep would upload every job's checkpoint
                logger_cfg["log_model"] = cfg.get("sweep_id") is None
            if cfg.get("sweep_id") is not None:
                logger_cfg["tags"] = [*logger_cfg["tags"], sweep_tag(cfg.sweep_id)]
        loggers.append(instantiate(logger_cfg))
    return loggers


def close_loggers(loggers: list, status: str, resume_step: int | None = None) -> None:
    """Flush and close every logger; `status` is success, failed or preempted (W&B marks the run so);
    a preempted training run resumes at `resume_step`."""
    for logger in loggers:
        if resume_step is not None and isinstance(logger, AppendingCSVLogger):
            logger.discard_unsaved(resume_step)
        logger.finalize("success" if status == "success" else "failed")
    if not any(isinstance(lg, WandbLogger) for lg in loggers):
        return
    import wandb

    if status == "preempted" and wandb.run is not None:
        wandb.run.mark_preempting()
    wandb.finish(exit_code={"success": 0, "failed": 1}.get(status, EXIT_PREEMPTED))


def log_analysis(loggers: list, result: dict, out: Path, prefix: str = "analysis") -> None:
    """The analysis's summary as metrics and, on W&B, its figures as images."""
    for logger in loggers:
        logger.log_metrics({f"{prefix}/{k}": v for k, v in result["summary"].items()})
        if isinstance(logger, WandbLogger):
            for name in result["figures"]:
                logger.log_image(key=f"{prefix}/{Path(name).stem}", images=[str(out / name)])
