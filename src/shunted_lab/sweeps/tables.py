"""A sweep's summary as files: summary.csv (every column) and summary.md (the tables a person reads)."""

import csv
import io
from pathlib import Path

from ..files import write_text
from .aggregate import group_keys, reported_groups


def write_csv(rows: list[dict], path: Path) -> None:
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(dict.fromkeys(k for r in rows for k in r)) or ["cell"])
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, text.getvalue())


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
    for column, title in (
        ("preempted", "Preempted jobs (the same command resumes them from their last step)"),
        ("failed", "Failed or incomplete jobs"),
    ):
        listed = [r for r in rows if r[column]]
        if listed:
            lines += ["", f"## {title}", ""] + [f"- {r['cell']}: {r[column]}" for r in listed]
    write_text(path, "\n".join(lines) + "\n")
