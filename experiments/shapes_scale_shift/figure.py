"""Test top-1 against object size, one line per mixer, a panel per sweep and FFN.

python experiments/shapes_scale_shift/figure.py OUT.png SWEEP_DIR [SWEEP_DIR ...]
"""

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from shunted_lab.sweeps import group_names, load_jobs, summarize  # noqa: E402
from shunted_lab.sweeps.plots import group_line  # noqa: E402

MIXERS = ("vit", "pvt", "swin", "shunted")
FFNS = ("plain", "detail_specific")


def main(out: str, sweeps: list[str]) -> None:
    fig, axes = plt.subplots(len(FFNS), len(sweeps), figsize=(5 * len(sweeps), 4 * len(FFNS)), squeeze=False)
    for column, sweep in enumerate(sweeps):
        jobs, _ = load_jobs(Path(sweep))
        groups = group_names(jobs)
        rows = {r["cell"]: r for r in summarize(jobs)}
        for row, mlp in enumerate(FFNS):
            ax = axes[row][column]
            for i, attention in enumerate(MIXERS):
                r = rows.get(f"attention={attention} mlp={mlp}")
                if r is not None and r["seeds"]:
                    group_line(ax, r, [f"test/top1_{g}" for g in groups], (i - 1.5) * 0.05, attention)
            ax.set_xticks(range(len(groups)), groups)
            ax.set(xlabel="object size bin (test)", ylabel="test top-1 (%)", title=f"{Path(sweep).name}, mlp={mlp}")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.suptitle("SHAPES test top-1 per object size (mean +- std over seeds)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
