"""A sweep read back and compared: its jobs (jobs.py), their summary by variant cell (aggregate.py), the
report files (write.py: tables.py, plots.py), the Hydra callback that keeps them current (callback.py),
and on W&B the sweep's report run (wandb_run.py) and its W&B Report (wandb_report.py)."""

from .aggregate import group_names, summarize
from .jobs import Job, load_jobs

# Not the report writer (write.write_report): every run loads this package for its Hydra callback, and
# the report's statistics (scipy) are for sweeps only; the lent GPU machine has no scipy.
__all__ = ["Job", "group_names", "load_jobs", "summarize"]
