"""Test mIoU against object size, one line per mixer: a row per FFN, a column for in distribution
(64 px, as trained) and for scale shift (the same scenes drawn at 128 px: `task=eval ... data.image_size=128`).

    python experiments/shapes_segmentation/figure.py OUT.png logs/multirun/shapes_segmentation
"""

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from shunted_lab.sweeps import group_names, load_jobs, summarize  # noqa: E402
from shunted_lab.sweeps.plots import group_line  # noqa: E402

MIXERS = ("vit", "pvt", "swin", "shunted")  # the study's grid (conf/experiment/shapes_segmentation.yaml)
FFNS = ("plain", "detail_specific")

CONDITIONS = (("", "in distribution (64 px)"), ("eval:", "scale shift (128 px)"))


def main(out: str, sweep: str) -> None:
    jobs, _ = load_jobs(Path(sweep))
    groups = group_names(jobs)
    rows = {r["cell"]: r for r in summarize(jobs)}
    fig, axes = plt.subplots(len(FFNS), len(CONDITIONS), figsize=(10, 8), squeeze=False)
    for column, (prefix, title) in enumerate(CONDITIONS):
        for row, mlp in enumerate(FFNS):
            ax = axes[row][column]
            for i, attention in enumerate(MIXERS):
                r = rows.get(f"attention={attention} mlp={mlp}")
                if r is not None and r["seeds"]:
                    group_line(ax, r, [f"{prefix}test/miou_{g}" for g in groups], (i - 1.5) * 0.05, attention)
            ax.set_xticks(range(len(groups)), groups)
            ax.set(xlabel="object size bin (side / image side)", ylabel="test mIoU (%)", title=f"{title}, mlp={mlp}")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.suptitle("SHAPES scenes: test mIoU over each size bin's objects (mean +- std over 3 seeds)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
