"""A sweep's report files in its directory: summary.csv, summary.md and the figures.

A cell is a job's overrides without `seed=`; its seeds are averaged (mean +- sample std). The
`SweepReport` callback (callback.py) writes them after every job; `python -m shunted_lab.report`
writes them for a saved sweep.
"""

from pathlib import Path

from .aggregate import score_of, summarize
from .jobs import load_jobs
from .plots import write_erf_plot, write_group_plot, write_plots
from .tables import write_csv, write_markdown


def write_report(sweep_dir: Path) -> list[dict]:
    sweep_dir = Path(sweep_dir)
    jobs, common = load_jobs(sweep_dir)
    rows, score = summarize(jobs), score_of(jobs)
    write_csv(rows, sweep_dir / "summary.csv")
    write_markdown(rows, sweep_dir / "summary.md", f"Sweep {sweep_dir.name}", common, score)
    write_plots(rows, jobs, sweep_dir, score)
    write_group_plot(rows, sweep_dir, score)
    write_erf_plot(rows, jobs, sweep_dir)
    return rows
