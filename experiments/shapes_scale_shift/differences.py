"""Shunted minus each other mixer, per FFN and object-size bin, with the seed spread of the difference.

    python experiments/shapes_scale_shift/differences.py logs/multirun/shapes_scale_shift [more sweeps]

For each sweep: test top-1 per size bin; the difference of the mean over seeds, its standard error
sqrt(s_a^2/n_a + s_b^2/n_b), and whether it is more than two standard errors from 0 (a rough
95% check; with 3 seeds a t-test would ask for about 4.3 standard errors).
"""

import statistics
import sys
from pathlib import Path

from shunted_lab.sweeps import group_names, load_jobs

MIXERS = ("vit", "pvt", "swin")


def seeds_of(jobs, attention: str, mlp: str, key: str) -> list[float]:
    cell = f"attention={attention} mlp={mlp}"
    return [100 * j.metrics[key] for j in jobs if j.cell == cell and j.status == "completed" and key in j.metrics]


def main(sweeps: list[str]) -> None:
    for sweep in sweeps:
        jobs, _ = load_jobs(Path(sweep))
        print(f"\n## {Path(sweep).name}: test top-1 (%), shunted minus each mixer\n")
        groups = group_names(jobs)
        print("| FFN | vs | " + " | ".join(f"{g} (diff +- se)" for g in (*groups, "all")) + " |")
        print("|---|---|" + "---|" * (len(groups) + 1))
        for mlp in ("plain", "detail_specific"):
            for other in MIXERS:
                cells = []
                for key in (*(f"test/top1_{g}" for g in groups), "test/top1"):
                    a, b = seeds_of(jobs, "shunted", mlp, key), seeds_of(jobs, other, mlp, key)
                    if len(a) < 2 or len(b) < 2:
                        cells.append("-")
                        continue
                    diff = statistics.fmean(a) - statistics.fmean(b)
                    se = (statistics.variance(a) / len(a) + statistics.variance(b) / len(b)) ** 0.5
                    cells.append(f"{diff:+.1f} +- {se:.1f}" + (" *" if abs(diff) > 2 * se else ""))
                print(f"| {mlp} | {other} | " + " | ".join(cells) + " |")
    print("\n*: the difference is more than two standard errors from 0.")


if __name__ == "__main__":
    main(sys.argv[1:])
