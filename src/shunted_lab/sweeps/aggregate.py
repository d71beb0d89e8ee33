"""A sweep's jobs summarized by variant cell: mean +- sample std over seeds of every compared number,
and the per-group top-1 columns (SHAPES' object-size bins)."""

import re
import statistics

from .jobs import EXTRA_FILES, Job


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


COLUMNS = ("val/top1", "test/top1", "train/images_per_sec", "peak_gpu_memory_mb", "wall_time_s")
GROUP_METRIC = re.compile(r"^(val|test)/top1_(\w+)$")  # top-1 within a group of images (training/module.py)


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
    return sorted(rows, key=lambda r: -(r["val/top1_mean"] or -1))
