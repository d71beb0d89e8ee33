"""A sweep's summary as files: summary.csv (every column) and summary.md (the tables a person reads)."""

import csv
import io
import math
import re
from pathlib import Path

from ..files import write_text
from .aggregate import GROUP_SIZES, SCORE_NAMES, group_keys, reported_groups
from .verdicts import COLUMNS

EXTRA_DETAIL = re.compile(r"/(iou|pixels|count)_")


def write_csv(rows: list[dict], path: Path) -> None:
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(dict.fromkeys(k for r in rows for k in r)) or ["cell"])
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, text.getvalue())


def _fmt(mean, std, scale=1.0, digits=1) -> str:
    return "-" if mean is None else f"{mean * scale:.{digits}f} +- {std * scale:.{digits}f}"


def write_verdicts_csv(rows: list[dict], path: Path) -> None:
    """verdicts.csv: a row per comparison (verdicts.COLUMNS); an undefined number (one pair: no interval) is empty."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=COLUMNS)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None or (isinstance(v, float) and math.isnan(v)) else v for k, v in row.items()})
    write_text(path, text.getvalue())


def write_markdown(
    rows: list[dict], path: Path, title: str, common: list[str], score: str = "top1", verdicts: list[str] = ()
) -> None:
    """summary.md: the cells' table, then `verdicts` (the section's lines), then the other tables."""
    name = SCORE_NAMES[score]
    scores = [f"val/{score}", f"test/{score}"] + (["val/pixel_acc", "test/pixel_acc"] if score == "miou" else [])
    headers = [f"{k.split('/')[0]} {name if k.endswith(score) else 'pixel acc'}" for k in scores]
    lines = [
        f"# {title}",
        "",
        f"Overrides shared by every job: `{' '.join(common) or '(none)'}`",
        "",
        f"Mean +- std over seeds; {name}{' and pixel accuracy' * (score == 'miou')} in %; best val/{score} first.",
        "",
        f"| cell | seeds | {' | '.join(headers)} | params (M) | GMACs | train img/s | peak GPU mem (MB) | wall (s) |",
        "|---|---|" + "---|" * len(headers) + "---|---|---|---|---|",
    ]
    for r in rows:
        params = "-" if r["params"] is None else f"{r['params'] / 1e6:.2f}"
        gmacs = "-" if r["gmacs"] is None else f"{r['gmacs']:.3f}"
        values = " | ".join(_fmt(r[f"{k}_mean"], r[f"{k}_std"], 100) for k in scores)
        lines.append(
            f"| {r['cell']} | {r['seeds']} | {values} | {params} | {gmacs} "
            f"| {_fmt(r['train/images_per_sec_mean'], r['train/images_per_sec_std'], digits=0)} "
            f"| {_fmt(r['peak_gpu_memory_mb_mean'], r['peak_gpu_memory_mb_std'], digits=0)} "
            f"| {_fmt(r['wall_time_s_mean'], r['wall_time_s_std'], digits=0)} |"
        )
    lines += verdicts
    extras = list(dict.fromkeys(k[: -len("_mean")] for r in rows for k in r if ":" in k and k.endswith("_mean")))
    # Per-class IoUs and group sizes stay in summary.csv: a column each would bury the scores here.
    extras = [k for k in extras if not EXTRA_DETAIL.search(k)]
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
    grouped = reported_groups(rows, score)
    if grouped:
        size, title_case = GROUP_SIZES[score], name[0].upper() + name[1:] if score == "top1" else name
        counts = [
            f"{k.replace(f'/{size}_', ' ')} {r[k + '_mean']:.0f}"
            for k in group_keys(rows, size)
            if (r := next((r for r in rows if r[k + "_mean"] is not None), None))
        ]
        what = (
            "within each group of evaluation images (SHAPES: object-size bins, `data.scale_bins`)"
            if score == "top1"
            else "over the pixels of the objects in each size bin (`data.scale_bins`; metrics.SegmentationScores)"
        )
        lines += [
            "",
            f"## {title_case} per group",
            "",
            f"{title_case} (%) {what};",
            f"mean +- std over seeds. {'Images' if score == 'top1' else 'Pixels'} per group: {', '.join(counts)}.",
            "",
            "| cell | " + " | ".join(f"`{k}`" for k in grouped) + " |",
            "|---|" + "---|" * len(grouped),
        ]
        for r in rows:
            values = [_fmt(r.get(f"{k}_mean"), r.get(f"{k}_std"), 100) for k in grouped]
            lines.append(f"| {r['cell']} | " + " | ".join(values) + " |")
    for column, title in (
        ("preempted", "Preempted jobs (the same command resumes them from their last step)"),
        ("failed", "Failed or incomplete jobs"),
    ):
        listed = [r for r in rows if r[column]]
        if listed:
            lines += ["", f"## {title}", ""] + [f"- {r['cell']}: {r[column]}" for r in listed]
    write_text(path, "\n".join(lines) + "\n")
