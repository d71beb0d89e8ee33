"""What a run prints is for the person running it: progress, the result and where it went.

These filters drop library lines that say nothing about this run: Lightning's advertisements, its
notice that our own model summary replaced its default, its inventory of accelerators (the config
chose the device), its note that it reads the training loader to count the steps, and a deprecation
inside Lightning's code.

Lightning also prints each of its lines a second time when it is imported after logging is set up
(as run.py does, so that a config error answers before torch loads): its package logger has a
console handler of its own, and its records also reach the root logger's. Where the root has
handlers (Hydra's console and run.log), `quiet_libraries` removes Lightning's own, so that each line
is printed once, in the run's format, and kept in run.log.
"""

import logging
import warnings

NOISE = (
    "💡 Tip:",  # Lightning advertises litlogger and cloud uploads on every fit
    "Trainer already configured with model summary callbacks",  # the summary with true FLOPs is ours
    "GPU available:",
    "TPU available:",
    "HPU available:",
    "Loading `train_dataloader` to estimate number of stepping batches",  # the schedule's length
    "Loaded model weights from the checkpoint at",  # follows "Restoring states from the checkpoint path"
)
# Lightning's rank-zero messages go to whichever of these its modules set last.
RANK_ZERO_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "lightning_utilities.core.rank_zero",
)


class DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(NOISE)


def quiet_libraries() -> None:
    """Install the filters in this process (idempotent)."""
    package = logging.getLogger("lightning")
    if logging.getLogger().hasHandlers():
        for handler in [h for h in package.handlers if type(h) is logging.StreamHandler]:
            package.removeHandler(handler)
    for name in RANK_ZERO_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropNoise) for f in logger.filters):
            logger.addFilter(DropNoise())
    # Lightning's own pytree helper, on every fit with torch >= 2.10; nothing a user can change.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
