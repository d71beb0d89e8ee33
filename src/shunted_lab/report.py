"""Compare the variant cells of a sweep: summary.md, summary.csv and PNG plots, and on W&B.

    python -m shunted_lab.report SWEEP_DIR [--wandb-report [--wandb-workspace] [--entity E] [--project P]]

A cell is a job's overrides without `seed=`; its seeds are averaged (mean +- sample std).
The same report is written by the `SweepReport` Hydra callback after every job of a sweep (a
multirun, or the jobs a W&B agent starts), which also logs it to the sweep's W&B report run
(sweep_wandb.py). `--wandb-report` builds the W&B Report (wandb_report.py).
"""

import argparse
import csv
import json
import logging
import re
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from .config import agent_sweep_id, sweep_id_of
from .sweep_wandb import log_sweep_summary

log = logging.getLogger(__name__)

FAILED_FILE = "failed.json"
# Written into a job directory after training: by `task=eval` and by the analysis. Their numbers
# become extra report columns named "<prefix>:<key>".
EVAL_FILE = "eval.json"
ANALYSIS_FILE = "analysis/analysis.json"
EXTRA_FILES = {"eval": EVAL_FILE, "analysis": ANALYSIS_FILE}


def extra_metrics(job_dir: Path) -> dict[str, float]:
    """The numbers of a job's eval and analysis files (an analysis file's flat "summary")."""
    found = {}
    for prefix, name in EXTRA_FILES.items():
        if (job_dir / name).is_file():
            data = json.loads((job_dir / name).read_text())
            data = data.get("summary", data)
            found.update({f"{prefix}:{k}": v for k, v in data.items() if isinstance(v, int | float)})
    return found


def error_line(error: BaseException) -> str:
    """An error's own message in one line. One raised in a DataLoader worker arrives with the worker's
    traceback in front of it: its message is then the last line."""
    lines = str(error).strip().splitlines() or [""]
    line = lines[-1] if "Original Traceback" in str(error) else lines[0]
    return line.split(f"{type(error).__name__}: ", 1)[-1]


@dataclass
class Job:
    dir: Path
    cell: str
    seed: str
    status: str  # completed | failed | incomplete
    overrides: list[str]  # its .hydra/overrides.yaml
    metrics: dict | None = None
    error: str | None = None


def load_jobs(sweep_dir: Path) -> tuple[list[Job], list[str]]:
    """The sweep's jobs, and the overrides common to all of them (not part of any cell's name)."""
    found = [
        (f.parent.parent, yaml.safe_load(f.read_text()) or [])
        for f in sorted(Path(sweep_dir).glob("*/.hydra/overrides.yaml"))
    ]
    common = [o for o in (found[0][1] if found else []) if all(o in overrides for _, overrides in found)]
    jobs = []
    for job_dir, overrides in found:
        seeds = [o.split("=", 1)[1] for o in overrides if o.startswith("seed=")]
        cell = " ".join(o for o in overrides if o not in common and not o.startswith("seed=")) or "(all jobs)"
        job = Job(job_dir, cell, seeds[0] if seeds else "0", "incomplete", overrides)
        if (job_dir / "metrics.json").is_file():
            job.status, job.metrics = "completed", json.loads((job_dir / "metrics.json").read_text())
            job.metrics.update(extra_metrics(job_dir))
        elif (job_dir / FAILED_FILE).is_file():
            job.status, job.error = "failed", json.loads((job_dir / FAILED_FILE).read_text())["error"]
        jobs.append(job)
    return jobs, common


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


COLUMNS = ("val/top1", "test/top1", "train/images_per_sec", "peak_gpu_memory_mb", "wall_time_s")
GROUP_METRIC = re.compile(r"^(val|test)/top1_(\w+)$")  # top-1 within a group of images (module.py)


def group_names(jobs: list[Job]) -> list[str]:
    """The groups the jobs report top-1 for, in their data config's order (SHAPES' scale_bins), else by name."""
    done = [j.metrics for j in jobs if j.status == "completed"]
    found = {m[2] for d in done for k in d if (m := GROUP_METRIC.match(k))}
    order = [g for d in done for g in ((d.get("config") or {}).get("data") or {}).get("scale_bins") or {}]
    return sorted(found, key=lambda g: (order.index(g) if g in order else len(order), g))


def group_columns(jobs: list[Job]) -> list[str]:
    """val/test top1_<group> and count_<group> (images in the group) for every group."""
    return [f"{split}/{what}_{g}" for what in ("top1", "count") for split in ("val", "test") for g in group_names(jobs)]


def group_keys(rows: list[dict], what: str) -> list[str]:
    """The summary's `<split>/<what>_<group>` columns (what: top1 or count), in order."""
    keys = [k.removesuffix("_mean") for k in (rows[0] if rows else {}) if k.endswith("_mean")]
    return [k for k in keys if re.fullmatch(rf"(val|test)/{what}_\w+", k)]


def reported_groups(rows: list[dict]) -> list[str]:
    """The `<split>/top1_<group>` columns of groups that had images in some cell."""
    return [k for k in group_keys(rows, "top1") if any(r[f"{k}_mean"] is not None for r in rows)]


def summarize(jobs: list[Job]) -> list[dict]:
    rows = []
    groups = group_columns(jobs)
    for cell in dict.fromkeys(j.cell for j in jobs):
        cell_jobs = [j for j in jobs if j.cell == cell]
        done = [j.metrics for j in cell_jobs if j.status == "completed"]
        row = {"cell": cell, "seeds": len(done)}
        extras = sorted({k for m in done for k in m if ":" in k and k.split(":", 1)[0] in EXTRA_FILES})
        for key in (*COLUMNS, *groups, *extras):
            row[f"{key}_mean"], row[f"{key}_std"] = _mean_std([m[key] for m in done if m.get(key) is not None])
        row["params"] = done[0]["params"] if done else None
        row["gmacs"] = done[0]["gmacs"] if done else None
        problems = [
            f"seed {j.seed}: {j.status}" + (f" ({j.error})" if j.error else "")
            for j in cell_jobs
            if j.status != "completed"
        ]
        row["failed"] = "; ".join(problems)
        rows.append(row)
    return sorted(rows, key=lambda r: -(r["val/top1_mean"] or -1))


def _fmt(mean, std, scale=1.0, digits=1) -> str:
    return "-" if mean is None else f"{mean * scale:.{digits}f} +- {std * scale:.{digits}f}"


def write_markdown(rows: list[dict], path: Path, title: str, common: list[str]) -> None:
    lines = [
        f"# {title}",
        "",
        f"Overrides shared by every job: `{' '.join(common) or '(none)'}`",
        "",
        "Mean +- std over seeds; top-1 in %; best val/top1 first.",
        "",
        "| cell | seeds | val top-1 | test top-1 | params (M) | GMACs | train img/s | peak GPU mem (MB) | wall (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        params = "-" if r["params"] is None else f"{r['params'] / 1e6:.2f}"
        gmacs = "-" if r["gmacs"] is None else f"{r['gmacs']:.3f}"
        lines.append(
            f"| {r['cell']} | {r['seeds']} | {_fmt(r['val/top1_mean'], r['val/top1_std'], 100)} "
            f"| {_fmt(r['test/top1_mean'], r['test/top1_std'], 100)} | {params} | {gmacs} "
            f"| {_fmt(r['train/images_per_sec_mean'], r['train/images_per_sec_std'], digits=0)} "
            f"| {_fmt(r['peak_gpu_memory_mb_mean'], r['peak_gpu_memory_mb_std'], digits=0)} "
            f"| {_fmt(r['wall_time_s_mean'], r['wall_time_s_std'], digits=0)} |"
        )
    extras = list(dict.fromkeys(k[: -len("_mean")] for r in rows for k in r if ":" in k and k.endswith("_mean")))
    if extras:
        lines += [
            "",
            "## Evaluation and analysis",
            "",
            "eval: `task=eval` scores; analysis: ERF area ratios, mean attention distance, px (shunted_lab.analysis).",
            "",
            "| cell | " + " | ".join(f"`{k}`" for k in extras) + " |",
            "|---|" + "---|" * len(extras),
        ]
        for r in rows:
            values = [_fmt(r.get(f"{k}_mean"), r.get(f"{k}_std"), digits=3) for k in extras]
            lines.append(f"| {r['cell']} | " + " | ".join(values) + " |")
    grouped = reported_groups(rows)
    if grouped:
        counts = [f"{k.replace('/count_', ' ')} {rows[0][k + '_mean']:.0f}" for k in group_keys(rows, "count")]
        lines += [
            "",
            "## Top-1 per group",
            "",
            "Top-1 (%) within each group of evaluation images (SHAPES: object-size bins, `data.scale_bins`);",
            f"mean +- std over seeds. Images per group: {', '.join(counts)}.",
            "",
            "| cell | " + " | ".join(f"`{k}`" for k in grouped) + " |",
            "|---|" + "---|" * len(grouped),
        ]
        for r in rows:
            values = [_fmt(r.get(f"{k}_mean"), r.get(f"{k}_std"), 100) for k in grouped]
            lines.append(f"| {r['cell']} | " + " | ".join(values) + " |")
    failed = [r for r in rows if r["failed"]]
    if failed:
        lines += ["", "## Failed or incomplete jobs", ""] + [f"- {r['cell']}: {r['failed']}" for r in failed]
    path.write_text("\n".join(lines) + "\n")


def val_curve(job: Job) -> tuple[list[int], list[float]]:
    """(epoch, val/top1) from the job's CSV log."""
    path = job.dir / "csv" / "metrics.csv"
    if not path.is_file():
        return [], []
    points = {}
    with open(path) as f:
        for row in csv.DictReader(f):
            if row.get("val/top1"):
                points[int(row["epoch"])] = float(row["val/top1"])
    return list(points), list(points.values())


def write_plots(rows: list[dict], jobs: list[Job], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if r["seeds"]]
    for x_key, x_label, name in (
        ("gmacs", "GMACs per image", "top1_vs_gmacs.png"),
        ("train/images_per_sec_mean", "training images / s", "top1_vs_throughput.png"),
    ):
        fig, ax = plt.subplots(figsize=(7, 5))
        for r in (r for r in done if r[x_key] is not None):
            ax.errorbar(r[x_key], r["val/top1_mean"] * 100, yerr=r["val/top1_std"] * 100, fmt="o", capsize=3)
            ax.annotate(
                r["cell"], (r[x_key], r["val/top1_mean"] * 100), fontsize=7, xytext=(4, 4), textcoords="offset points"
            )
        ax.set(xlabel=x_label, ylabel="val top-1 (%)", title=f"val top-1 vs {x_label}")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / name, dpi=120)
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 5))
    for r in done:
        curves = [val_curve(j) for j in jobs if j.cell == r["cell"] and j.status == "completed"]
        curves = [c for c in curves if c[0]]
        if curves:
            length = min(len(c[0]) for c in curves)
            mean = [statistics.fmean(c[1][i] for c in curves) * 100 for i in range(length)]
            ax.plot(curves[0][0][:length], mean, marker="o", markersize=3, label=r["cell"])
    ax.set(xlabel="epoch", ylabel="val top-1 (%)", title="validation top-1 (mean over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "val_curves.png", dpi=120)
    plt.close(fig)


def write_group_plot(rows: list[dict], out: Path) -> None:
    """Top-1 per group (x: the groups in order, e.g. object size) for each cell, a panel per split."""
    import matplotlib.pyplot as plt  # write_plots chose the backend

    panels = {}
    for key in reported_groups(rows):
        split, group = GROUP_METRIC.match(key).groups()
        panels.setdefault(split, []).append(group)
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.5), squeeze=False)
    for ax, (split, groups) in zip(axes[0], panels.items(), strict=True):
        for i, r in enumerate(r for r in rows if r["seeds"]):
            x = [g + i * 0.04 for g in range(len(groups))]  # nudged apart so the error bars do not hide each other
            mean = [r[f"{split}/top1_{g}_mean"] for g in groups]
            std = [r[f"{split}/top1_{g}_std"] for g in groups]
            points = [(a, m * 100, s * 100) for a, m, s in zip(x, mean, std, strict=True) if m is not None]
            if points:
                ax.errorbar(*zip(*points, strict=True), marker="o", markersize=4, capsize=3, label=r["cell"])
        ax.set_xticks(range(len(groups)), groups)
        ax.set(xlabel="group", ylabel="top-1 (%)", title=f"{split}: top-1 per group (mean +- std over seeds)")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "top1_by_group.png", dpi=120)
    plt.close(fig)


def write_erf_plot(rows: list[dict], jobs: list[Job], out: Path) -> None:
    """The cells' ERFs side by side, a row per cell and a column per stage (mean over seeds),
    where their jobs were analyzed."""
    import matplotlib.pyplot as plt  # write_plots chose the backend
    import numpy as np

    cells = []
    for r in rows:
        found = [j.dir / "analysis" / "erf.npz" for j in jobs if j.cell == r["cell"] and j.status == "completed"]
        seeds = []
        for path in (p for p in found if p.is_file()):
            with np.load(path) as erf:
                seeds.append([erf[stage] for stage in sorted(erf.files)])
        if seeds:
            cells.append((r["cell"], np.mean(seeds, axis=0)))
    if not cells:
        return
    stages = len(cells[0][1])
    fig, axes = plt.subplots(len(cells), stages, figsize=(2.2 * stages, 2.3 * len(cells)), squeeze=False)
    for row, (cell, maps) in zip(axes, cells, strict=True):
        for i, (ax, erf) in enumerate(zip(row, maps, strict=True)):
            ax.imshow(np.log10(1 + erf / max(erf.max(), 1e-30) * 1e3), cmap="viridis")
            ax.set_title(f"{cell}, stage {i + 1}", fontsize=7)
            ax.axis("off")
    fig.suptitle("effective receptive field of each stage's central location (log scale, mean over seeds)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "erf_by_cell.png", dpi=100)
    plt.close(fig)


def write_report(sweep_dir: Path) -> list[dict]:
    sweep_dir = Path(sweep_dir)
    jobs, common = load_jobs(sweep_dir)
    rows = summarize(jobs)
    with open(sweep_dir / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)) or ["cell"])
        writer.writeheader()
        writer.writerows(rows)
    write_markdown(rows, sweep_dir / "summary.md", f"Sweep {sweep_dir.name}", common)
    write_plots(rows, jobs, sweep_dir)
    write_group_plot(rows, sweep_dir)
    write_erf_plot(rows, jobs, sweep_dir)
    return rows


def sweep_dir_of(config: DictConfig) -> Path | None:
    """A job's sweep directory: its multirun's, or for a job a W&B agent started its parent (config.run_dir)."""
    if config.hydra.mode == RunMode.MULTIRUN:
        return Path(config.hydra.sweep.dir)
    if agent_sweep_id() is not None:
        return Path(config.hydra.runtime.output_dir).parent
    return None


class SweepReport(Callback):
    """Records failed jobs and rewrites the sweep's report after every job, so the report is
    there even when a job fails (Hydra then ends the sweep with an error after the last job).
    Where the jobs log to W&B, the summary and figures go to the sweep's report run too; with
    `wandb_report=true` the W&B Report is built at the end of a multirun (or its spec saved, offline)."""

    def __init__(self, wandb_report: bool = False):
        self.wandb_report = wandb_report

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs) -> None:
        sweep_dir = sweep_dir_of(config)
        if sweep_dir is None:
            return
        job_dir = Path(config.hydra.runtime.output_dir)
        if job_return.status == JobStatus.FAILED:
            error = f"{type(job_return._return_value).__name__}: {error_line(job_return._return_value)}"
            (job_dir / FAILED_FILE).write_text(
                json.dumps({"error": error, "overrides": list(config.hydra.overrides.task)})
            )
            overrides = " ".join(config.hydra.overrides.task)
            log.error("job %s failed (%s): %s", config.hydra.job.num, overrides, error)
        rows = write_report(sweep_dir)
        wandb_cfg = OmegaConf.select(config, "logger.wandb")
        if wandb_cfg is not None:
            sweep_id = config.get("sweep_id") or sweep_id_of(sweep_dir)
            settings = {k: wandb_cfg.get(k) for k in ("project", "entity", "offline")}
            try:
                log_sweep_summary(sweep_dir, rows, sweep_id, settings)
            except Exception as e:  # the report is on disk; a W&B outage must not fail the sweep
                log.warning("sweep summary not logged to W&B: %s", error_line(e))

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = write_report(sweep_dir)
        log.info("sweep report: %s", sweep_dir / "summary.md")
        for r in rows:
            if r["failed"]:
                log.error("failed: %s: %s", r["cell"], r["failed"])
        if self.wandb_report:
            for line in publish_wandb_report(sweep_dir):
                log.info(line)


def publish_wandb_report(
    sweep_dir: Path, rows: list[dict] | None = None, entity=None, project=None, workspace: bool = False
) -> list[str]:
    """Build the sweep's W&B Report (wandb_report.py); given the summary `rows`, refresh the report run's
    table first (the command line: `task=eval` may have added columns since the last job)."""
    # wandb_workspaces takes a second to import, and only this path needs it: not every run.py start.
    from .wandb_report import publish, read_sweep

    jobs, common = load_jobs(sweep_dir)
    sweep = read_sweep(sweep_dir, jobs, common)
    if rows is not None:
        log_sweep_summary(
            sweep_dir, rows, sweep.id, {"project": project or sweep.project, "entity": entity or sweep.entity}
        )
    return publish(sweep, entity, project, workspace)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m shunted_lab.report", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="a sweep directory (Hydra multirun or W&B agent)")
    parser.add_argument("--wandb-report", action="store_true", help="create or update the sweep's W&B Report")
    parser.add_argument("--wandb-workspace", action="store_true", help="also save a workspace view of the project")
    parser.add_argument("--entity", help="W&B entity (default: the jobs' logger.wandb.entity, else yours)")
    parser.add_argument("--project", help="W&B project (default: the jobs' logger.wandb.project)")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        print(f"error: {args.sweep_dir} is not a directory (expected a Hydra multirun directory)", file=sys.stderr)
        return 2
    rows = write_report(args.sweep_dir)
    if not rows:
        print(f"error: {args.sweep_dir} holds no job directories (*/.hydra/overrides.yaml)", file=sys.stderr)
        return 2
    print((args.sweep_dir / "summary.md").read_text())
    if args.wandb_report or args.wandb_workspace:
        try:
            lines = publish_wandb_report(args.sweep_dir, rows, args.entity, args.project, args.wandb_workspace)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
