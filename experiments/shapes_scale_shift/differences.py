"""Shunted minus each other mixer, per FFN and object-size bin, with the seed spread of the difference.

    python experiments/shapes_scale_shift/differences.py logs/multirun/shapes_scale_shift [more sweeps]

For each sweep: test top-1 per size bin (shunted_lab.sweeps.differences says how a gap is judged).
"""

import sys
from pathlib import Path

from shunted_lab.sweeps import group_names, load_jobs
from shunted_lab.sweeps.differences import FOOTNOTE, differences_table


def main(sweeps: list[str]) -> None:
    for sweep in sweeps:
        jobs, _ = load_jobs(Path(sweep))
        print(f"\n## {Path(sweep).name}: test top-1 (%), shunted minus each mixer\n")
        groups = group_names(jobs)
        keys = [*(f"test/top1_{g}" for g in groups), "test/top1"]
        print("\n".join(differences_table(jobs, keys, [*groups, "all"])))
    print(f"\n{FOOTNOTE}")


if __name__ == "__main__":
    main(sys.argv[1:])
