"""A sweep's report files in its directory: summary.csv, summary.md, verdicts.csv and the figures.

A cell is a job's overrides without `seed=`; its seeds are averaged (mean +- sample std), and every two
cells that differ on one axis are compared seed by seed (verdicts.py). The
`SweepReport` callback (callback.py) writes them after every job; `python -m shunted_lab.report`
writes them for a saved sweep. Jobs running side by side (hydra/launcher=ray) write them under a
lock in the sweep directory, each reading every job's files inside it: the last writer sees every
job that ended before it, so no row is lost when two jobs end at once.
"""

import fcntl
from pathlib import Path

from .aggregate import score_of, summarize
from .jobs import load_jobs
from .plots import write_erf_plot, write_group_plot, write_plots, write_verdict_plot
from .tables import write_csv, write_markdown, write_verdicts_csv
from .verdicts import markdown_section, verdict_rows

REPORT_LOCK = ".report.lock"


def write_report(sweep_dir: Path) -> list[dict]:
    sweep_dir = Path(sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    with open(sweep_dir / REPORT_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        return _write_report(sweep_dir)


def _write_report(sweep_dir: Path) -> list[dict]:
    jobs, common = load_jobs(sweep_dir)
    rows, score = summarize(jobs), score_of(jobs)
    verdicts = verdict_rows(jobs, common)
    write_csv(rows, sweep_dir / "summary.csv")
    write_verdicts_csv(verdicts, sweep_dir / "verdicts.csv")
    write_markdown(rows, sweep_dir / "summary.md", f"Sweep {sweep_dir.name}", common, score, markdown_section(verdicts))
    write_verdict_plot(verdicts, sweep_dir / "verdicts.png")
    write_plots(rows, jobs, sweep_dir, score)
    write_group_plot(rows, sweep_dir, score)
    write_erf_plot(rows, jobs, sweep_dir)
    return rows
