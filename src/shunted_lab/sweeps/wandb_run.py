"""A sweep's comparison as a W&B run: the summary table (mean +- std per cell), the verdicts table
(verdicts.csv: each pair of values of a swept axis, paired by seed) and the report's figures.

The run is named `report-<sweep id>`, job_type=report, in group `<sweep id>`, tagged `sweep=<sweep id>`
like the sweep's jobs, in their project. The `SweepReport` callback refreshes it after every job by
resuming it (its id follows from the sweep id) and logging the table and figures again; W&B keeps
each version and shows the latest. Without an API key it is an offline run under
<sweep dir>/wandb/, uploaded later by `wandb sync` like the jobs' runs.
"""

import hashlib
import os
from pathlib import Path

from ..run_dirs import sweep_tag
from ..wandb_env import wandb_offline

SUMMARY_TABLE = "sweep_summary"
VERDICTS_TABLE = "sweep_verdicts"
FIGURE_PREFIX = "figures/"
REPORT_JOB_TYPE = "report"
AGENT_VARIABLES = ("WANDB_SWEEP_ID", "WANDB_RUN_ID", "WANDB_SWEEP_PARAM_PATH")


def report_run_id(sweep_id: str) -> str:
    return "report-" + hashlib.sha1(sweep_id.encode()).hexdigest()[:12]


def summary_table(rows: list[dict]):
    import wandb

    columns = list(dict.fromkeys(k for r in rows for k in r))
    return wandb.Table(columns=columns, data=[[r.get(c) for c in columns] for r in rows])


def verdicts_table(sweep_dir: Path):
    """verdicts.csv as a W&B table (its numbers as numbers), or None before any comparison."""
    import csv

    import wandb

    path = Path(sweep_dir) / "verdicts.csv"
    if not path.is_file():
        return None
    with open(path) as f:
        rows = list(csv.reader(f))
    if len(rows) < 2:
        return None
    return wandb.Table(columns=rows[0], data=[[number(v) for v in row] for row in rows[1:]])


def number(text: str):
    try:
        return float(text) if text else None
    except ValueError:
        return text


def log_sweep_summary(sweep_dir: Path, rows: list[dict], sweep_id: str, wandb_cfg: dict) -> str:
    """Log the summary rows and the sweep directory's PNGs to the sweep's report run; returns its id.
    `wandb_cfg`: the jobs' logger.wandb config (project, entity, offline)."""
    import wandb

    run_id = report_run_id(sweep_id)
    # Under a W&B agent, wandb.init would make this run one of the sweep's, with the agent's run id; wandb
    # read the agent's variables when it started in this process, so it starts afresh without them.
    agent = {k: os.environ.pop(k) for k in AGENT_VARIABLES if k in os.environ}
    if agent:
        wandb.teardown()
    try:
        with wandb.init(
            project=wandb_cfg["project"],
            entity=wandb_cfg.get("entity"),
            id=run_id,
            resume="allow",
            name=f"report-{sweep_id}",
            group=sweep_id,
            job_type=REPORT_JOB_TYPE,
            tags=[sweep_tag(sweep_id)],
            dir=str(sweep_dir),
            # WANDB_MODE passed on: wandb reads the environment once per process, maybe before it was set.
            mode="offline" if wandb_offline(wandb_cfg.get("offline", False)) else os.environ.get("WANDB_MODE"),
            reinit="create_new",
        ) as run:
            figures = {
                f"{FIGURE_PREFIX}{png.stem}": wandb.Image(str(png)) for png in sorted(Path(sweep_dir).glob("*.png"))
            }
            verdicts = verdicts_table(sweep_dir)
            run.log({SUMMARY_TABLE: summary_table(rows), **({VERDICTS_TABLE: verdicts} if verdicts else {}), **figures})
    finally:
        os.environ.update(agent)
    return run_id
