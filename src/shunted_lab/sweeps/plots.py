"""A sweep's figures: the score (top-1, or mIoU for segmentation) against cost, validation curves, the
score per group (segmentation: IoU against object size, per mixer) and the cells' ERFs. File names keep
`top1` for classification sweeps and say `miou` for segmentation ones."""

import csv
import statistics
from pathlib import Path

from ..files import atomic_write
from .aggregate import GROUP_METRIC, SCORE_NAMES, reported_groups
from .jobs import Job


def save_figure(fig, path: Path, dpi: int) -> None:
    """Written whole or not at all (a kill mid-write leaves the previous figure), then closed."""
    import matplotlib.pyplot as plt

    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=dpi))
    plt.close(fig)


def val_curve(job: Job, score: str) -> tuple[list[int], list[float]]:
    """(epoch, val/<score>) from the job's CSV log."""
    path = job.dir / "csv" / "metrics.csv"
    if not path.is_file():
        return [], []
    points = {}
    with open(path) as f:
        for row in csv.DictReader(f):
            if row.get(f"val/{score}"):
                points[int(row["epoch"])] = float(row[f"val/{score}"])
    return list(points), list(points.values())


def write_plots(rows: list[dict], jobs: list[Job], out: Path, score: str = "top1") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if r["seeds"]]
    name = SCORE_NAMES[score]
    for x_key, x_label, file in (
        ("gmacs", "GMACs per image", f"{score}_vs_gmacs.png"),
        ("train/images_per_sec_mean", "training images / s", f"{score}_vs_throughput.png"),
    ):
        fig, ax = plt.subplots(figsize=(7, 5))
        for r in (r for r in done if r[x_key] is not None):
            mean, std = r[f"val/{score}_mean"] * 100, r[f"val/{score}_std"] * 100
            ax.errorbar(r[x_key], mean, yerr=std, fmt="o", capsize=3)
            ax.annotate(r["cell"], (r[x_key], mean), fontsize=7, xytext=(4, 4), textcoords="offset points")
        ax.set(xlabel=x_label, ylabel=f"val {name} (%)", title=f"val {name} vs {x_label}")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        save_figure(fig, out / file, 120)
    fig, ax = plt.subplots(figsize=(7, 5))
    for r in done:
        curves = [val_curve(j, score) for j in jobs if j.cell == r["cell"] and j.status == "completed"]
        curves = [c for c in curves if c[0]]
        if curves:
            length = min(len(c[0]) for c in curves)
            mean = [statistics.fmean(c[1][i] for c in curves) * 100 for i in range(length)]
            ax.plot(curves[0][0][:length], mean, marker="o", markersize=3, label=r["cell"])
    ax.set(xlabel="epoch", ylabel=f"val {name} (%)", title=f"validation {name} (mean over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, out / "val_curves.png", 120)


def group_line(ax, row: dict, keys: list[str], offset: float, label: str) -> None:
    """One cell's score over the groups (`keys` of a summary row, in x order), in %, with the seeds' std
    as error bars; a group without a score is left out. `offset` nudges the line sideways, so that
    the error bars of several cells stay visible."""
    points = [(g + offset, row.get(f"{k}_mean"), row.get(f"{k}_std")) for g, k in enumerate(keys)]
    points = [(x, 100 * mean, 100 * std) for x, mean, std in points if mean is not None]
    if points:
        ax.errorbar(*zip(*points, strict=True), marker="o", markersize=4, capsize=3, label=label)


def write_group_plot(rows: list[dict], out: Path, score: str = "top1") -> None:
    """The score per group (x: the groups in order, e.g. object size) for each cell, a panel per split."""
    import matplotlib.pyplot as plt  # write_plots chose the backend

    panels = {}
    name = SCORE_NAMES[score]
    for key in reported_groups(rows, score):
        split, _, group = GROUP_METRIC.match(key).groups()
        panels.setdefault(split, []).append(group)
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.5), squeeze=False)
    for ax, (split, groups) in zip(axes[0], panels.items(), strict=True):
        for i, r in enumerate(r for r in rows if r["seeds"]):
            group_line(ax, r, [f"{split}/{score}_{g}" for g in groups], i * 0.04, r["cell"])
        ax.set_xticks(range(len(groups)), groups)
        xlabel = "object size" if score == "miou" else "group"
        ax.set(xlabel=xlabel, ylabel=f"{name} (%)", title=f"{split}: {name} per {xlabel} (mean +- std over seeds)")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, out / f"{score}_by_group.png", 120)


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
    save_figure(fig, out / "erf_by_cell.png", 100)


def write_verdict_plot(rows: list[dict], path: Path) -> None:
    """verdicts.png: a forest plot of the paired differences a - b, one panel per metric: the mean, its t
    interval (thick) and bootstrap interval (thin), coloured by verdict; the line at 0 is no difference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .verdicts import metric_name, pair_label, unit

    metrics = list(dict.fromkeys(r["metric"] for r in rows))
    if not metrics:
        path.unlink(missing_ok=True)
        return
    per_panel = max(sum(r["metric"] == m for r in rows) for m in metrics)
    columns = min(2, len(metrics))
    panels_down = -(-len(metrics) // columns)
    fig, axes = plt.subplots(
        panels_down, columns, figsize=(7 * columns, (0.35 * per_panel + 1.2) * panels_down), squeeze=False
    )
    colours = {"a better": "tab:green", "b better": "tab:red", "not resolved": "tab:gray", "too few seeds": "silver"}
    for ax, metric in zip(axes.flat, metrics, strict=False):
        shown = [r for r in rows if r["metric"] == metric][::-1]  # the first row on top
        scale = 100 if unit(metric) == "points" else 1
        for y, r in enumerate(shown):
            colour = colours[r["verdict"]]
            ax.plot([r["boot_low"] * scale, r["boot_high"] * scale], [y, y], color=colour, lw=1)
            ax.plot([r["ci_low"] * scale, r["ci_high"] * scale], [y, y], color=colour, lw=3, alpha=0.6)
            ax.plot(r["diff"] * scale, y, "o", color=colour)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks(range(len(shown)), [f"{pair_label(r)} (n={r['n']})" for r in shown], fontsize=8)
        ax.set_title(f"{metric_name(metric)}: a \u2212 b ({unit(metric)})", fontsize=10)
    for ax in list(axes.flat)[len(metrics) :]:
        ax.axis("off")
    handles = [plt.Line2D([], [], color=c, marker="o", lw=3, alpha=0.8) for c in colours.values()]
    fig.legend(handles, list(colours), loc="lower center", ncol=len(colours), fontsize=8)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    save_figure(fig, path, 110)
