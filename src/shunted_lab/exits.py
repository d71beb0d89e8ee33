"""How a run ends, as run.py's exit codes, and the exceptions that carry each one.

They live apart from the code that raises them (config rules, data, training callbacks, stop
signals) so that run.py and the sweep callback can catch them without importing torch: a config
mistake is answered before the training stack loads.
"""

import signal
from pathlib import Path

EXIT_CONFIG_ERROR, EXIT_NON_FINITE_LOSS, EXIT_DATA_ERROR = 2, 3, 4
EXIT_PREEMPTED = 75  # sysexits.h EX_TEMPFAIL: a temporary failure; the same command continues the run


class ConfigError(ValueError):
    """A mistake in the config (or in a file it names) that the user can fix."""


class DataError(ValueError):
    """A problem with the user's data met during a run (an unreadable image, a training split
    smaller than one batch): run.py ends the run with this one line, like a config error."""


class NonFiniteLossError(RuntimeError):
    """A NaN/Inf training loss (training/callbacks.NonFiniteLossGuard)."""


class Preempted(BaseException):
    """A stop signal ended the run (training/preemption.py); a BaseException, as KeyboardInterrupt is,
    so that no library's `except Exception` swallows it on the way out.

    `received` is the process's first stop signal: later jobs of a multirun in this process see it."""

    received: str | None = None

    def __init__(self, signal_name: str, step: int | None = None, checkpoint: Path | None = None, previous=None):
        self.signal_name, self.step, self.checkpoint = signal_name, step, checkpoint
        self.previous_handler = previous
        saved = f"saved step {step} to {checkpoint}" if checkpoint else "nothing new to save"
        super().__init__(f"stopped by {signal_name}: {saved}")

    @staticmethod
    def behind(error: BaseException) -> "Preempted | None":
        """The stop that `error` is, or was raised while handling: a signal can land inside a library
        call whose cleanup then fails in its turn (Rich's progress bar, stopped before its thread ran)."""
        while error is not None and not isinstance(error, Preempted):
            error = error.__cause__ or error.__context__
        return error

    def hand_over(self) -> None:
        """Give the signal to the handler that was installed before ours (submitit's requeue), if any.
        Python's own (Ctrl-C's KeyboardInterrupt) and the default and ignore actions are not handed over."""
        handler = self.previous_handler
        if callable(handler) and handler is not signal.default_int_handler:
            handler(signal.Signals[self.signal_name], None)


def _record_stop(signum: int, frame) -> None:
    Preempted.received = Preempted.received or signal.Signals(signum).name


def record_stop_signals(names: list[str]) -> None:
    """In a multirun's own process (the basic launcher), a stop signal between two runs (Hydra composing
    the next job, the report being written) is recorded instead of killing the process: the next job is
    not started, and the sweep ends with EXIT_PREEMPTED once its report is written. A run installs its own
    handlers over these while it trains (training/preemption.py)."""
    for name in names:
        signal.signal(signal.Signals[name], _record_stop)
