"""What a run prints is for the person running it: progress, the result and where it went.

These filters drop library lines that say nothing about this run: Lightning's advertisements, its
notice that our own model summary replaced its default, and a deprecation inside Lightning's code.
"""

import logging
import warnings

NOISE = (
    "💡 Tip:",  # Lightning advertises litlogger and cloud uploads on every fit
    "Trainer already configured with model summary callbacks",  # the summary with true FLOPs is ours
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
    for name in RANK_ZERO_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropNoise) for f in logger.filters):
            logger.addFilter(DropNoise())
    # Lightning's own pytree helper, on every fit with torch >= 2.10; nothing a user can change.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
