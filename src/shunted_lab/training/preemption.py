"""Stop signals: a preempted or time-limited run saves the step it reached and exits with EXIT_PREEMPTED.

Schedulers stop a job with a signal and kill it a little later: SIGTERM (SLURM's preemption,
`scancel`, `kill`), SIGINT (Ctrl-C), or the signal a job asked for ahead of its time limit (SIGUSR1
with `sbatch --signal=USR1@90`; submitit asks for SIGUSR2). `StopSignals` makes each of them mean
"stop soon, lose nothing":

- during training, the optimizer step in progress finishes and last.ckpt is written for it through
  the atomic checkpoint IO; a validation that is due at that step, or in progress, runs to its end
  and is saved too (so that the resumed run's history has it: Lightning does not resume a
  validation halfway); then the run stops;
- wherever no step has run since the last checkpoint and no validation is running (building,
  compiling or capturing the first step, the evaluation and W&B work after the fit), the run stops
  at once: there is nothing to save;
- a second signal before the save stops at once; the previous checkpoint is whole (atomic IO).

The run stops by raising Preempted, a BaseException as KeyboardInterrupt is, so that no library's
`except Exception` swallows it on the way out. train() closes the loggers (the W&B run marked
preempted); run.py records the stop in the run directory and exits with EXIT_PREEMPTED, or first
hands the signal to the handler that was there before ours (submitit's, which requeues the job).
"""

import logging
import signal
from pathlib import Path

import lightning as L
import torch
import torch.distributed as dist

from ..exits import Preempted
from ..run_dirs import last_checkpoint

log = logging.getLogger(__name__)


class StopAgreement:
    """Whether any process was asked to stop, agreed by all of them one step late without blocking.

    Each call starts an asynchronous all-reduce (MAX) of this process's flag over a gloo group, on CPU
    tensors, so no device work is waited for; and answers with the one started at the previous call,
    which every process started a step ago. All processes thus see the same answer at the same call:
    a stop under DDP takes one more training step than on one process. Create it on every process
    at the same point (the group is made collectively)."""

    def __init__(self):
        self.group = dist.new_group(backend="gloo")
        self.previous: tuple | None = None  # (work, flag) of the last call

    def __call__(self, asked: bool) -> bool:
        flag = torch.tensor([int(asked)])
        work = dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.group, async_op=True)
        previous, self.previous = self.previous, (work, flag)
        if previous is None:
            return False
        previous[0].wait()
        return bool(previous[1].item())

    def close(self) -> None:
        if self.previous is not None:
            self.previous[0].wait()
            self.previous = None


class StopSignals(L.Callback):
    """The handlers of `signals` for as long as the `with` block runs, and, as a callback of the
    trainer, the safe points where a stopping run saves its step. The process's first stop signal
    is kept in `Preempted.received`."""

    def __init__(self, output_dir: str | Path, signals: list[str]):  # signals: conf/config.yaml stop_signals
        self.output_dir = Path(output_dir)
        self.signals = [signal.Signals[name] for name in signals]
        self.previous: dict[signal.Signals, object] = {}
        self.pending: str | None = None
        self.trainer: L.Trainer | None = None  # set while the fit trains: steps may be unsaved
        self.agreement: StopAgreement | None = None  # under DDP, while the fit trains
        self.saved_step = 0
        self.saved_for_stop = False  # the stop's checkpoint is written: the run stops at the next step's start
        self.stopping = False

    def __enter__(self) -> "StopSignals":
        self.previous = {s: signal.signal(s, self._handle) for s in self.signals}
        if Preempted.received:  # recorded between a sweep's jobs (exits.record_stop_signals): nothing to save yet
            self.__exit__()
            raise Preempted(Preempted.received)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)

    def closing(self) -> None:
        """The run is ending (its loggers are being closed): a signal now is recorded, not raised."""
        self.stopping = True

    def _handle(self, signum: int, frame) -> None:
        name = signal.Signals(signum).name
        Preempted.received = Preempted.received or name
        if self.stopping:
            log.warning("%s received while the run closes; it stops when its files are written", name)
            return
        trainer = self.trainer
        unsaved = trainer is not None and (trainer.validating or trainer.global_step > self.saved_step)
        if self.pending is None and unsaved:
            self.pending = name
            log.warning(
                "%s: saving at the end of the step (or of the validation) in progress, then stopping; "
                "a second signal stops without saving",
                name,
            )
            return
        self.stopping = True
        raise Preempted(self.pending or name, previous=self._previous_handler(self.pending or name))

    def _previous_handler(self, name: str | None):
        return self.previous.get(signal.Signals[name]) if name in signal.Signals.__members__ else None

    def on_train_start(self, trainer, pl_module) -> None:
        # Lightning installed its own SIGTERM handler for the fit (it ends the run as a success): ours again.
        for s in self.signals:
            signal.signal(s, self._handle)
        self.trainer, self.saved_step = trainer, trainer.global_step
        self.agreement = StopAgreement() if trainer.world_size > 1 else None

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        self.saved_step = trainer.global_step

    # Where a stopping run saves: at the end of its step, as Lightning's step-interval checkpoints do.
    # A validation that follows still runs, and its end saves again: Lightning resumes a checkpoint
    # taken at a validation's step as if that validation had run. The stop itself comes at the next
    # step's start (or the fit's end), once this step's and this validation's logs are written.
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._asked(trainer):
            self._save(trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        if self.trainer is not None and (self.saved_for_stop or self._asked(trainer)):
            self._save(trainer)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.saved_for_stop:
            self._stop(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        """The fit's end: a stop saved before it happens now; otherwise steps after the last checkpoint
        are saved, so that after the fit a signal never has to wait."""
        if self.saved_for_stop:
            self._stop(trainer)
        if trainer.global_step > self.saved_step:
            trainer.save_checkpoint(last_checkpoint(self.output_dir))
        if self.agreement is not None:
            self.agreement.close()
        self.trainer, self.agreement = None, None

    def _asked(self, trainer) -> bool:
        asked = self.pending is not None
        if self.agreement is not None:  # every process stops at the same point, whichever one got the signal
            asked = self.agreement(asked)
        return asked

    def _save(self, trainer) -> None:
        trainer.save_checkpoint(last_checkpoint(self.output_dir))
        self.saved_for_stop = True

    def _stop(self, trainer) -> None:
        self.stopping = True
        name = self.pending or "a stop signal on another process"
        raise Preempted(name, trainer.global_step, last_checkpoint(self.output_dir), self._previous_handler(name))
