"""Lightning's CSVLogger, made to append to an existing metrics.csv.

Lightning's writer forgets the header of a file it did not write in this process, so evaluating
after `fit` under ddp_spawn, or resuming into the same run directory, fails on the first new
column. Reading the header back fixes both.
"""

import csv
import os

from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger


class CSVLogger(LightningCSVLogger):
    @property
    def experiment(self):
        writer = super().experiment
        if writer is not None and not writer.metrics_keys and os.path.isfile(writer.metrics_file_path):
            with open(writer.metrics_file_path, newline="") as f:
                writer.metrics_keys = next(csv.reader(f), [])
        return writer
