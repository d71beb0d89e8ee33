"""A W&B Report per sweep, and on request a saved workspace view of the whole project (wandb-workspaces).

    python -m shunted_lab.report SWEEP_DIR --wandb-report [--wandb-workspace] [--entity E] [--project P]

The report holds the sweep's command and overrides, then two panel grids:
- the sweep's training runs (tag `sweep=<id>`, job_type=train), grouped by W&B group, i.e. by variant
  cell: the score (val/top1; segmentation: val/miou) and val/loss against trainer/global_step (each
  cell's mean and std over seeds), GMACs and train images/s against the score, and parallel
  coordinates over attention, mlp and the swept keys, ending at the score;
- the sweep's report run (wandb_run.py): the summary table and the sweep's figures.
It ends with summary.md as text. The workspace view shows the first grid's panels for every run of
the project, grouped the same way.

With an API key the report is created, or updated when <sweep dir>/wandb_report_id names one, and its
URL printed. Without one (or with WANDB_MODE=offline) nothing is sent: the spec is written to
<sweep dir>/wandb_report.json (and wandb_workspace.json) and the commands that publish it later are printed.
"""

import dataclasses
from pathlib import Path

import wandb_workspaces.reports.v2 as wr
import wandb_workspaces.workspaces as ws
import yaml
from wandb_workspaces import expr

from ..config import override_key, override_value
from ..files import write_json, write_text
from ..run_dirs import sweep_id_of, sweep_tag
from ..wandb_env import wandb_online
from .aggregate import score_of
from .jobs import Job, load_jobs
from .wandb_run import FIGURE_PREFIX, REPORT_JOB_TYPE, SUMMARY_TABLE, VERDICTS_TABLE, log_sweep_summary

REPORT_ID_FILE = "wandb_report_id"
REPORT_SPEC_FILE = "wandb_report.json"
WORKSPACE_SPEC_FILE = "wandb_workspace.json"
ALWAYS_COMPARED = ("attention.name", "mlp.name")


@dataclasses.dataclass
class Sweep:
    dir: Path
    id: str
    entity: str | None
    project: str
    command: str
    common: list[str]  # overrides every job shares
    swept: dict[str, list[str]]  # key -> the values its jobs took (seed included)
    compared: list[str]  # config keys the parallel coordinates run through
    figures: list[str]  # the sweep's PNGs, as keys of the report run
    score: str  # val/<the objective's headline metric (aggregate.score_of)


def config_key(key: str, config: dict) -> str | None:
    """The logged config key an override sets: `optim.lr` itself, a group choice (`attention=vit`) its
    `name`, a top-level value (`seed`) itself; None for a group without a name."""
    key = override_key(key)
    if "." in key:
        return key
    value = config.get(key)
    if isinstance(value, dict):
        return f"{key}.name" if "name" in value else None
    return key


def read_sweep(sweep_dir: Path, jobs: list[Job], common: list[str]) -> Sweep:
    """The sweep's W&B facts from its jobs (jobs.load_jobs: directories, overrides, metrics.json)."""
    configs = [j.metrics["config"] for j in jobs if j.status == "completed" and "config" in j.metrics]
    logged = [c for c in configs if "wandb" in (c.get("logger") or {})]
    if not logged:
        raise ValueError(f"{sweep_dir}: no completed job logged to W&B (logger=wandb or csv_wandb)")
    wandb_cfg = logged[0]["logger"]["wandb"]
    swept: dict[str, list[str]] = {}
    for job in jobs:
        for override in job.overrides:
            if override not in common:
                swept.setdefault(override_key(override), []).append(override_value(override))
    swept = {k: list(dict.fromkeys(v)) for k, v in swept.items()}
    compared = list(ALWAYS_COMPARED)
    for key in swept:
        column = config_key(key, logged[0])
        if column and column not in compared and key != "seed":
            compared.append(column)
    multirun = Path(sweep_dir) / "multirun.yaml"
    if multirun.is_file():  # Hydra's record of the command line's overrides
        overrides = yaml.safe_load(multirun.read_text())["hydra"]["overrides"]["task"]
    else:  # a W&B agent's sweep: the grid its jobs ran
        overrides = common + [f"{k}={','.join(v)}" for k, v in swept.items()]
    return Sweep(
        dir=Path(sweep_dir),
        id=logged[0].get("sweep_id") or sweep_id_of(sweep_dir),
        entity=wandb_cfg.get("entity"),
        project=wandb_cfg["project"],
        command="python run.py -m " + " ".join(overrides),
        common=common,
        swept=swept,
        compared=compared,
        figures=[f"{FIGURE_PREFIX}{p.stem}" for p in sorted(Path(sweep_dir).glob("*.png"))],
        score=f"val/{score_of(jobs)}",
    )


def comparison_panels(compared: list[str], score: str) -> list:
    """Curves per cell (mean and std over its seeds), cost against the score, and the swept keys."""
    curves = [
        wr.LinePlot(
            title=f"{metric} (mean and std over seeds)",
            x="trainer/global_step",
            y=[metric],
            groupby_aggfunc="mean",
            groupby_rangefunc="stddev",
        )
        for metric in (score, "val/loss")
    ]
    costs = [
        wr.ScatterPlot(title=f"{score} against {cost}", x=wr.SummaryMetric(cost), y=wr.SummaryMetric(score))
        for cost in ("gmacs", "train/images_per_sec")
    ]
    columns = [wr.ParallelCoordinatesPlotColumn(metric=wr.Config(key)) for key in compared]
    columns.append(wr.ParallelCoordinatesPlotColumn(metric=wr.SummaryMetric(score)))
    return [*curves, *costs, wr.ParallelCoordinatesPlot(title=f"swept keys to {score}", columns=columns)]


def sweep_runs(sweep: Sweep, entity: str, project: str, job_type: str, name: str) -> wr.Runset:
    return wr.Runset(
        entity=entity,
        project=project,
        name=name,
        filters=[expr.Tags().isin([sweep_tag(sweep.id)]), expr.Metric("JobType") == job_type],
        groupby=["group"] if job_type == "train" else [],
    )


def build_report(sweep: Sweep, entity: str, project: str) -> wr.Report:
    summary = sweep.dir / "summary.md"
    swept = "; ".join(f"`{k}`: {', '.join(v)}" for k, v in sweep.swept.items())
    return wr.Report(
        entity=entity,
        project=project,
        title=f"Sweep {sweep.id}"[:128],
        description=f"{len(sweep.swept.get('seed', ['0']))} seed(s) per cell; runs grouped by variant cell.",
        blocks=[
            wr.H1("The sweep"),
            wr.MarkdownBlock(
                f"```\n{sweep.command}\n```\n\nOverrides shared by every job: `{' '.join(sweep.common) or '(none)'}`."
                f"\n\nSwept: {swept or '(nothing)'}. W&B runs tagged `{sweep_tag(sweep.id)}`."
            ),
            wr.H2("Variant cells compared"),
            wr.PanelGrid(
                runsets=[sweep_runs(sweep, entity, project, "train", f"sweep {sweep.id}: jobs by cell")],
                panels=comparison_panels(sweep.compared, sweep.score),
            ),
            wr.H2("Summary (mean +- std over seeds), verdicts (paired by seed) and figures"),
            wr.PanelGrid(
                runsets=[sweep_runs(sweep, entity, project, REPORT_JOB_TYPE, f"sweep {sweep.id}: report run")],
                panels=[
                    wr.WeavePanelSummaryTable(table_name=SUMMARY_TABLE),
                    wr.WeavePanelSummaryTable(table_name=VERDICTS_TABLE),
                    wr.MediaBrowser(media_keys=sweep.figures),
                ],
            ),
            wr.MarkdownBlock(summary.read_text() if summary.is_file() else "(no summary.md yet)"),
        ],
    )


def build_workspace(compared: list[str], entity: str, project: str, score: str) -> ws.Workspace:
    return ws.Workspace(
        entity=entity,
        project=project,
        name="shunted-lab: variant cells compared",
        sections=[ws.Section(name="Variant cells", panels=comparison_panels(compared, score), is_open=True)],
        runset_settings=ws.RunsetSettings(filters=[expr.Metric("JobType") == "train"], groupby=[expr.Metric("Group")]),
    )


def spec(obj):
    """A report or workspace as plain data (class names kept), for saving and inspecting offline: building
    the W&B form of a runset needs the server."""
    if dataclasses.is_dataclass(obj):
        # Private fields are the library's bookkeeping, layouts its placement of panels.
        names = [f.name for f in dataclasses.fields(obj) if not f.name.startswith("_") and f.name != "layout"]
        fields = {name: spec(getattr(obj, name)) for name in names}
        return {"type": type(obj).__name__, **{k: v for k, v in fields.items() if v not in (None, [], {}, "")}}
    if isinstance(obj, list | tuple):
        return [spec(o) for o in obj]
    if isinstance(obj, dict):
        return {str(k): spec(v) for k, v in obj.items()}
    return obj


def publish(sweep: Sweep, entity: str | None, project: str | None, workspace: bool) -> list[str]:
    """Create or update the sweep's report (and the workspace) on W&B, or save their specs offline.
    Returns the lines to tell the user."""
    project = project or sweep.project
    entity = entity or sweep.entity
    online = wandb_online()
    if online and not entity:
        import wandb

        entity = wandb.Api().default_entity
    report = build_report(sweep, entity or "", project)
    views = [(report, REPORT_SPEC_FILE)]
    if workspace:
        views.append((build_workspace(sweep.compared, entity or "", project, sweep.score), WORKSPACE_SPEC_FILE))
    if not online:
        for view, name in views:
            write_json(sweep.dir / name, spec(view))
        flag = " --wandb-workspace" * workspace
        return [
            f"no W&B credentials: saved {', '.join(str(sweep.dir / name) for _, name in views)}; nothing was sent.",
            "To publish: wandb login, then",
            f"  wandb sync {sweep.dir}/*/wandb/offline-run-* {sweep.dir}/wandb/offline-run-*",
            f"  python -m shunted_lab.report {sweep.dir} --wandb-report{flag}",
        ]
    id_file = sweep.dir / REPORT_ID_FILE
    if id_file.is_file():  # update the sweep's report rather than add another
        report.id = id_file.read_text().strip()
    report.save()
    write_text(id_file, report.id)
    lines = [f"W&B report: {report.url}"]
    for view, _ in views[1:]:
        view.save()
        lines.append(f"W&B workspace: {view.url}")
    return lines


def publish_wandb_report(
    sweep_dir: Path, rows: list[dict] | None = None, entity=None, project=None, workspace: bool = False
) -> list[str]:
    """Build the sweep's W&B Report; given the summary `rows`, refresh the report run's table first (the
    command line: `task=eval` may have added columns since the last job)."""
    jobs, common = load_jobs(sweep_dir)
    sweep = read_sweep(sweep_dir, jobs, common)
    if rows is not None:
        log_sweep_summary(
            sweep_dir, rows, sweep.id, {"project": project or sweep.project, "entity": entity or sweep.entity}
        )
    return publish(sweep, entity, project, workspace)
