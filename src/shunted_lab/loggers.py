"""Our loggers: Lightning's CSVLogger made to survive kills and resumes, and its WandbLogger with what a
comparison needs from a finished run.

CSVLogger: Lightning's writer deletes an existing metrics.csv when it starts, so resuming into a run
directory, or evaluating after `fit` in a process spawned by ddp_spawn, would erase the log of
the earlier process: this one appends to it, under its header. Lightning also buffers rows for
100 steps, which a kill -9 loses: flushing whenever a checkpoint is saved keeps the log on disk
as far as the checkpoint.
"""

import csv
import logging
import netrc
import os
from pathlib import Path
from urllib.parse import urlparse

from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

from .predictions import Predictions

log = logging.getLogger(__name__)

# W&B tables hold 10,000 rows, and a confusion matrix is a row per (true, predicted) pair of classes.
CONFUSION_MATRIX_MAX_CLASSES = 100


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


class CSVLogger(LightningCSVLogger):
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


def wandb_offline(configured: bool) -> bool:
    """Whether a W&B run goes offline: no key means no prompt, ever; the user runs `wandb sync` later.
    WANDB_MODE, when set, decides instead (wandb reads it)."""
    return configured or (not os.environ.get("WANDB_MODE") and not wandb_has_credentials())


def wandb_has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


class WandbLogger(LightningWandbLogger):
    """Lightning's WandbLogger, whose run also gets, at the end of fit (`log_fit_end`), the best
    checkpoint as a model artifact (`log_model`), a table of validation predictions and a confusion matrix.

    The artifact is the file the atomic checkpoint IO finished writing, copied into W&B's staging area
    when it is logged: ModelCheckpoint deleting a superseded best file later cannot break the upload.
    Lightning's own `log_model` is never used: it would also upload last.ckpt, a resume file.
    """

    def __init__(self, *args, log_model: bool = False, predictions: int = 32, confusion_matrix: bool = True, **kw):
        if kw.get("offline"):  # Lightning says so through WANDB_MODE, which wandb reads once per process
            kw["mode"] = "offline"
        super().__init__(*args, log_model=False, **kw)
        self.upload_best_checkpoint = log_model
        self.num_predictions = predictions
        self.log_confusion_matrix = confusion_matrix

    def log_fit_end(self, predictions: Predictions | None, best_checkpoint: str, metadata: dict) -> None:
        import wandb

        run = self.experiment
        if predictions is not None and self.num_predictions:
            run.log({"val/predictions": predictions_table(predictions, self.num_predictions)})
        classes = len(predictions.class_names) if predictions is not None else 0
        if classes > CONFUSION_MATRIX_MAX_CLASSES and self.log_confusion_matrix:
            log.info("no confusion matrix: %d classes (at most %d)", classes, CONFUSION_MATRIX_MAX_CLASSES)
        elif classes and self.log_confusion_matrix:  # the predictions cover the whole split then (train.py)
            matrix = wandb.plot.confusion_matrix(
                y_true=predictions.labels.tolist(),
                preds=predictions.predicted.tolist(),
                class_names=predictions.class_names,
                title="validation confusion matrix (best checkpoint)",
            )
            run.log({"val/confusion_matrix": matrix})
        if self.upload_best_checkpoint and best_checkpoint:
            artifact = wandb.Artifact(f"model-{run.id}", type="model", metadata=metadata)
            artifact.add_file(best_checkpoint, name=Path(best_checkpoint).name)
            run.log_artifact(artifact, aliases=["best", "latest"])


def predictions_table(predictions: Predictions, count: int):
    """The first `count` validation images with label, prediction and confidence (and group, if any)."""
    import wandb

    names, groups = predictions.class_names, predictions.group_names
    columns = ["image", "label", "prediction", "confidence", "correct"] + (["group"] if groups else [])
    rows = []
    for i in range(min(count, len(predictions.images))):
        label, predicted = int(predictions.labels[i]), int(predictions.predicted[i])
        row = [wandb.Image(predictions.images[i]), names[label], names[predicted]]
        row += [float(predictions.confidence[i]), label == predicted]
        rows.append(row + ([groups[int(predictions.groups[i])]] if groups else []))
    return wandb.Table(columns=columns, data=rows)
