"""Callbacks of our own; everything else comes from Lightning."""

import time

import lightning as L


class TrainThroughput(L.Callback):
    """Training images per second (all devices), wall clock between batch ends, data loading
    included, after `warmup_batches` so that start-up and compilation are not counted."""

    def __init__(self, warmup_batches: int = 5):
        self.warmup_batches = warmup_batches
        self.images = 0
        self.seconds = 0.0
        self._seen = 0
        self._last = None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._last = None  # the gap across validation is not training time

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        self._seen += 1
        if self._last is not None and self._seen > self.warmup_batches:
            self.images += len(batch[0]) * trainer.world_size
            self.seconds += now - self._last
        self._last = now

    @property
    def images_per_sec(self) -> float | None:
        return self.images / self.seconds if self.seconds else None
