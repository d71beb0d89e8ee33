"""A sweep's jobs summarized by variant cell: mean +- sample std over seeds of every compared number,
and the per-group columns (SHAPES' object-size bins: top-1 per image bin, or mIoU per object-size bin
for segmentation).

The sweep's score is its objective's headline metric (training/objectives.py): `top1` for
classification, `miou` for segmentation; its per-group columns are `<split>/<score>_<group>`.
"""

import re
import statistics

from ..run_dirs import HEADLINE
from .jobs import EXTRA_FILES, Job

SCORE_NAMES = {"top1": "top-1", "miou": "mIoU"}
GROUP_SIZES = {"top1": "count", "miou": "pixels"}  # how many images / pixels each group had


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


COST_COLUMNS = ("train/images_per_sec", "peak_gpu_memory_mb", "wall_time_s")
GROUP_METRIC = re.compile(r"^(val|test)/(top1|miou)_(\w+)$")  # the score within a group (training/metrics.py)


def score_of(jobs: list[Job]) -> str:
    """The headline metric of the sweep's objective (that of its completed jobs; classification before any)."""
    done = [j.metrics for j in jobs if j.status == "completed"]
    return HEADLINE[done[0].get("objective", "classification")] if done else "top1"


def columns(score: str) -> tuple[str, ...]:
    extra = ("val/pixel_acc", "test/pixel_acc") if score == "miou" else ()
    return (f"val/{score}", f"test/{score}", *extra, *COST_COLUMNS)


def group_names(jobs: list[Job]) -> list[str]:
    """The groups the jobs report a score for, in their data config's order (SHAPES' scale_bins), else by name."""
    done = [j.metrics for j in jobs if j.status == "completed"]
    found = {m[3] for d in done for k in d if (m := GROUP_METRIC.match(k))}
    order = [g for d in done for g in ((d.get("config") or {}).get("data") or {}).get("scale_bins") or {}]
    return sorted(found, key=lambda g: (order.index(g) if g in order else len(order), g))


def group_columns(jobs: list[Job], score: str) -> list[str]:
    """val/test <score>_<group> and the group's size (count_: images, pixels_: pixels) for every group."""
    groups = group_names(jobs)
    return [f"{split}/{what}_{g}" for what in (score, GROUP_SIZES[score]) for split in ("val", "test") for g in groups]


def group_keys(rows: list[dict], what: str) -> list[str]:
    """The summary's `<split>/<what>_<group>` columns (what: a score, count or pixels), in order."""
    keys = [k.removesuffix("_mean") for k in (rows[0] if rows else {}) if k.endswith("_mean")]
    return [k for k in keys if re.fullmatch(rf"(val|test)/{what}_\w+", k)]


def reported_groups(rows: list[dict], score: str) -> list[str]:
    """The `<split>/<score>_<group>` columns of groups that had images in some cell."""
    return [k for k in group_keys(rows, score) if any(r[f"{k}_mean"] is not None for r in rows)]


def summarize(jobs: list[Job]) -> list[dict]:
    """A row per cell, best val score first."""
    rows = []
    score = score_of(jobs)
    groups = group_columns(jobs, score)
    for cell in dict.fromkeys(j.cell for j in jobs):
        cell_jobs = [j for j in jobs if j.cell == cell]
        done = [j.metrics for j in cell_jobs if j.status == "completed"]
        row = {"cell": cell, "seeds": len(done)}
        extras = sorted({k for m in done for k in m if ":" in k and k.split(":", 1)[0] in EXTRA_FILES})
        for key in (*columns(score), *groups, *extras):
            row[f"{key}_mean"], row[f"{key}_std"] = mean_std([m[key] for m in done if m.get(key) is not None])
        row["params"] = done[0]["params"] if done else None
        row["gmacs"] = done[0]["gmacs"] if done else None
        for statuses, column in ((("preempted",), "preempted"), (("failed", "incomplete"), "failed")):
            row[column] = "; ".join(
                f"seed {j.seed}: {j.status}" + (f" ({j.error})" if j.error else "")
                for j in cell_jobs
                if j.status in statuses
            )
        rows.append(row)
    return sorted(rows, key=lambda r: -(r[f"val/{score}_mean"] or -1))
