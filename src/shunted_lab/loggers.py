"""Lightning's CSVLogger, made to survive kills and resumes.

Lightning's writer deletes an existing metrics.csv when it starts, so resuming into a run
directory, or evaluating after `fit` in a process spawned by ddp_spawn, would erase the log of
the earlier process: this one appends to it, under its header. Lightning also buffers rows for
100 steps, which a kill -9 loses: flushing whenever a checkpoint is saved keeps the log on disk
as far as the checkpoint.
"""

import csv

from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment


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
