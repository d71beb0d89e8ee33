"""Callbacks of our own; everything else comes from Lightning."""

import logging
import random
import time

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import RichModelSummary, RichProgressBar

from ..cpu_allocator import keep_freed_memory
from ..data.pipelines import WorkersPipeline
from ..exits import NonFiniteLossError

log = logging.getLogger(__name__)


def waiting_line(share: float, trainer) -> str:
    """What a run that waits for its data should try: more loader workers; decoding and augmenting
    on the device, where the data can (data.pipeline)."""
    device = "GPU" if trainer.strategy.root_device.type == "cuda" else trainer.strategy.root_device.type.upper()
    data = trainer.datamodule
    tries = [f"more loader workers (data.num_workers={getattr(data, 'num_workers', '?')} now)"]
    if isinstance(getattr(data, "pipeline", None), WorkersPipeline):  # an image folder decoding in the workers
        tries.append("data.pipeline=device (decode and augment on the training device)")
    return (
        f"the {device} waited for data {share:.0%} of epoch {trainer.current_epoch}'s training time; "
        f"try {' or '.join(tries)}"
    )


class TrainThroughput(L.Callback):
    """Training images per second (all devices), wall clock between batch ends, data loading
    included, after `warmup_batches` so that start-up and compilation are not counted.

    Also: the first training step's seconds (compilation included, when compiling), the share of
    training time spent waiting for the next batch, and the peak GPU memory allocated. The wait is
    the host's time between a step's end and the next batch's start, read from the host clock only
    (no device sync, which would let the loader catch up while the host waits for the device): in
    the graph modes a step's end comes as soon as its replay is queued, so the wait is what the
    device's queue has to cover. Each epoch's share goes to every logger as `train/data_wait_share`
    (the run's, in metrics.json, under the same key); the first epoch above `warn_wait_share` says so
    in one line, with what to try.
    """

    def __init__(self, warmup_batches: int = 5, warn_wait_share: float = 0.10):
        self.warmup_batches = warmup_batches
        self.warn_wait_share = warn_wait_share
        self.images = 0
        self.seconds = 0.0
        self.waiting = 0.0
        self.epoch_seconds = 0.0
        self.epoch_waiting = 0.0
        self.warned = False
        self.first_step_s: float | None = None
        self._seen = 0
        self._last = None
        self._fit_start = None

    def on_train_start(self, trainer, pl_module) -> None:
        self._fit_start = time.perf_counter()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._last = None  # the gap across validation is not training time
        self.epoch_seconds = self.epoch_waiting = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._last is not None and self._seen >= self.warmup_batches:
            wait = time.perf_counter() - self._last  # the loader's time, transfer included
            self.waiting += wait
            self.epoch_waiting += wait

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        self._seen += 1
        if self.first_step_s is None and self._fit_start is not None:
            self.first_step_s = now - self._fit_start
        if self._last is not None and self._seen > self.warmup_batches:
            self.images += len(batch[0]) * trainer.world_size
            self.seconds += now - self._last
            self.epoch_seconds += now - self._last
        self._last = now

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not self.epoch_seconds or not trainer.is_global_zero:
            return
        share = self.epoch_waiting / self.epoch_seconds
        for logger in trainer.loggers:
            logger.log_metrics({"train/data_wait_share": share}, step=trainer.global_step)
        if share > self.warn_wait_share and not self.warned:
            self.warned = True
            log.warning(waiting_line(share, trainer))

    @property
    def images_per_sec(self) -> float | None:
        return self.images / self.seconds if self.seconds else None

    @property
    def data_wait_share(self) -> float | None:
        return self.waiting / self.seconds if self.seconds else None

    @staticmethod
    def peak_gpu_memory_mb() -> float | None:
        return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None


class NonFiniteLossGuard(L.Callback):
    """Stop at the first NaN/Inf training loss, before any checkpoint holding its step is written,
    naming the step and the last good checkpoint.

    On a GPU each step's finiteness is copied to the host asynchronously, behind an event, and read
    at a later step's end once the event has passed: the host never waits for the device (one CUDA
    graph replay a step in compile=cudagraphs), so a NaN stops the run a step or two after it. Before a
    checkpoint is written, and when the fit ends, every pending step is read at once."""

    def __init__(self):
        self.pending: list[tuple] = []  # (finite flag on the host, event or None, loss, global step, epoch, batch)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None:
            loss = loss.detach()
            finite, event = torch.isfinite(loss).all(), None
            if finite.is_cuda:
                finite, event = finite.to("cpu", non_blocking=True), torch.cuda.Event()
                event.record()
            self.pending.append((finite, event, loss, trainer.global_step, trainer.current_epoch, batch_idx))
        self.check(trainer, wait=False)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        # Lightning calls this before it writes the file: raising here leaves the last good one in place.
        self.check(trainer, wait=True)

    def on_train_end(self, trainer, pl_module) -> None:
        self.check(trainer, wait=True)

    def check(self, trainer, wait: bool) -> None:
        while self.pending:
            finite, event, loss, step, epoch, batch_idx = self.pending[0]
            if event is not None and not wait and not event.query():
                return  # the device has not reached it yet: a later step reads it
            if event is not None:
                event.synchronize()
            self.pending.pop(0)
            if not bool(finite):
                saved = [c.last_model_path for c in trainer.checkpoint_callbacks if c.last_model_path]
                raise NonFiniteLossError(
                    f"training loss is {loss.item()} at global step {step} (epoch {epoch}, batch {batch_idx}); "
                    f"last good checkpoint: {saved[0] if saved else 'none yet'}"
                )


class ProgressBar(RichProgressBar):
    """Lightning's Rich bar, whose metrics (the step's loss) are read every `metrics_every_n_batches`
    training batches, not every batch: reading a metric is a host sync, which every batch would keep
    the host from running ahead of the GPU."""

    def __init__(self, metrics_every_n_batches: int = 10, **kwargs):
        super().__init__(**kwargs)
        self.metrics_every_n_batches = metrics_every_n_batches
        self.metrics_due = True

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.metrics_due = (batch_idx + 1) % self.metrics_every_n_batches == 0
        try:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        finally:
            self.metrics_due = True

    def _update_metrics(self, trainer, pl_module) -> None:  # Lightning's, called at every batch's end
        if self.metrics_due:
            super()._update_metrics(trainer, pl_module)


class ModelSummary(RichModelSummary):
    """Lightning's rich model summary with a true FLOPs figure.

    Lightning counts FLOPs only by running the module's `example_input_array` and prints 0 without
    one; running one would also compile a compiled model for a batch it never trains on, and its
    counter misses SDPA's fused CPU kernel. fit.py sets `forward_flops` instead: one image's
    forward pass, counted once as the run's GMACs are. The per-layer column is not counted.
    """

    forward_flops: float | None = None

    def summarize(self, summary_data, *args, total_flops: int, **kwargs) -> None:
        summary_data = [(name, ["-"] * len(v) if name == "FLOPs" else v) for name, v in summary_data]
        flops = int(self.forward_flops) if self.forward_flops is not None else total_flops
        super().summarize(summary_data, *args, total_flops=flops, **kwargs)


class RandomStateCheckpoint(L.Callback):
    """Every checkpoint holds the global random states (torch's CPU and CUDA generators, numpy's,
    Python's), and a run resumed from one puts them back as training starts: dropout and drop path
    then draw what the uninterrupted run drew (the data's draws are seeded per item: data/resumable.py).
    Stored as tensors and plain tuples, which a `weights_only` load accepts."""

    def __init__(self):
        self.to_restore: dict | None = None

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        checkpoint["random_states"] = {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
            "python": random.getstate(),
        }

    def on_load_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        self.to_restore = checkpoint.get("random_states")

    def on_train_start(self, trainer, pl_module) -> None:
        if self.to_restore is None:
            return
        states, self.to_restore = self.to_restore, None
        torch.set_rng_state(states["torch"])
        if states["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(states["cuda"])
        kind, keys, pos, has_gauss, gauss = states["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        random.setstate(states["python"])


class KeepFreedMemoryOnCPU(L.Callback):
    """On the CPU, glibc keeps the memory a step frees for the next step (cpu_allocator.py), in every
    process of the run (ddp_spawn's start afresh) and in the loader workers they fork afterwards."""

    def setup(self, trainer, pl_module, stage):
        if trainer.strategy.root_device.type == "cpu":
            keep_freed_memory()
