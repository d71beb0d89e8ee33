"""A sweep's comparison as a W&B run: the summary table (mean +- std per cell) and the report's figures.

The run is named `report-<sweep id>`, job_type=report, in group `<sweep id>`, tagged `sweep=<sweep id>`
like the sweep's jobs, in their project. The `SweepReport` callback refreshes it after every job by
resuming it (its id is kept in <sweep dir>/wandb_report_run_id) and logging the table and figures
again; W&B keeps each version and shows the latest. Without an API key it is an offline run under
<sweep dir>/wandb/, uploaded later by `wandb sync` like the jobs' runs.
"""

from pathlib import Path

from .loggers import wandb_offline

SUMMARY_TABLE = "sweep_summary"
FIGURE_PREFIX = "figures/"
REPORT_RUN_ID_FILE = "wandb_report_run_id"
REPORT_JOB_TYPE = "report"


def sweep_tag(sweep_id: str) -> str:
    return f"sweep={sweep_id}"


def summary_table(rows: list[dict]):
    import wandb

    columns = list(dict.fromkeys(k for r in rows for k in r))
    return wandb.Table(columns=columns, data=[[r.get(c) for c in columns] for r in rows])


def log_sweep_summary(sweep_dir: Path, rows: list[dict], sweep_id: str, wandb_cfg: dict) -> str:
    """Log the summary rows and the sweep directory's PNGs to the sweep's report run; returns its id.
    `wandb_cfg`: the jobs' logger.wandb config (project, entity, offline)."""
    import wandb

    id_file = Path(sweep_dir) / REPORT_RUN_ID_FILE
    run_id = id_file.read_text().strip() if id_file.is_file() else wandb.util.generate_id()
    id_file.write_text(run_id)
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
        mode="offline" if wandb_offline(wandb_cfg.get("offline", False)) else None,
        reinit="create_new",
    ) as run:
        figures = {f"{FIGURE_PREFIX}{png.stem}": wandb.Image(str(png)) for png in sorted(Path(sweep_dir).glob("*.png"))}
        run.log({SUMMARY_TABLE: summary_table(rows), **figures})
    return run_id
