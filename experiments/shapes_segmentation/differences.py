"""Shunted minus each other mixer, per FFN and object-size bin, on segmentation: test mIoU in
distribution (the sweep's own test split) and under scale shift (`task=eval ... data.image_size=128`,
the eval: columns), with the seed spread of each difference (shunted_lab.sweeps.differences).

    python experiments/shapes_segmentation/differences.py logs/multirun/shapes_segmentation
"""

import sys
from pathlib import Path

from shunted_lab.sweeps import group_names, load_jobs
from shunted_lab.sweeps.differences import FOOTNOTE, differences_table

CONDITIONS = (("", "in distribution: test mIoU (%) at 64 px"), ("eval:", "scale shift: test mIoU (%) at 128 px"))


def main(sweep: str) -> None:
    jobs, _ = load_jobs(Path(sweep))
    groups = group_names(jobs)
    for prefix, title in CONDITIONS:
        print(f"\n## {title}, shunted minus each mixer\n")
        keys = [*(f"{prefix}test/miou_{g}" for g in groups), f"{prefix}test/miou"]
        print("\n".join(differences_table(jobs, keys, [*groups, "all"])))
    print(f"\n{FOOTNOTE}")


if __name__ == "__main__":
    main(sys.argv[1])
