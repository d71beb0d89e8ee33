"""Compare the variant cells of a saved sweep: summary.md, summary.csv, verdicts.csv and PNG plots, and on W&B.

    python -m shunted_lab.report SWEEP_DIR [--seeds-for DIFF] [--wandb-report [--wandb-workspace] [--entity E] ...]

The same files are written after every job of a sweep by its Hydra callback (sweeps/callback.py);
`--wandb-report` also builds the sweep's W&B Report (sweeps/wandb_report.py).

A verdict answers "is a better than b?" for two values of one swept axis (attention=shunted against
attention=pvt), every other axis held fixed. The two cells' jobs are paired by seed (a seed sees the
same data order in both), and the mean of the differences a - b gets a 95% Student-t interval, a
seeded bootstrap interval and a paired t-test, Holm-adjusted over all comparisons of the metric. The
verdict is "a better" or "b better" when the adjusted p is below 0.05, "not resolved" otherwise, and
"too few seeds" under 3 pairs; "seeds needed" is how many seeds a paired t-test needs to detect the
observed difference with 80% power at the level Holm asks (0.05 over the metric's comparisons). A
seed completed on one side only is named, not used.
`--seeds-for 0.01` plans ahead: the seeds each comparison would need to resolve a difference of 0.01
(1 point of top-1) with the spread of the differences measured so far.
"""

import argparse
import sys
from pathlib import Path

from .sweeps.jobs import load_jobs
from .sweeps.verdicts import seeds_for_lines, verdict_rows
from .sweeps.write import write_report


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m shunted_lab.report",
        description=__doc__.replace(__doc__.split("\n\n")[1] + "\n\n", ""),  # all but the usage line
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("sweep_dir", type=Path, help="a sweep directory (Hydra multirun or W&B agent)")
    parser.add_argument(
        "--seeds-for",
        type=float,
        metavar="DIFF",
        help="print the seeds each comparison needs to resolve a difference DIFF (metrics.json's unit: 0.01 = 1 point)",
    )
    parser.add_argument("--wandb-report", action="store_true", help="create or update the sweep's W&B Report")
    parser.add_argument("--wandb-workspace", action="store_true", help="also save a workspace view of the project")
    parser.add_argument("--entity", help="W&B entity (default: the jobs' logger.wandb.entity, else yours)")
    parser.add_argument("--project", help="W&B project (default: the jobs' logger.wandb.project)")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        print(f"error: {args.sweep_dir} is not a directory (expected a Hydra multirun directory)", file=sys.stderr)
        return 2
    rows = write_report(args.sweep_dir)
    if not rows:
        print(f"error: {args.sweep_dir} holds no job directories (*/.hydra/overrides.yaml)", file=sys.stderr)
        return 2
    print((args.sweep_dir / "summary.md").read_text())
    if args.seeds_for is not None:
        if args.seeds_for <= 0:
            print(f"error: --seeds-for {args.seeds_for:g}: expected a difference above 0", file=sys.stderr)
            return 2
        jobs, common = load_jobs(args.sweep_dir)
        print(f"## Seeds to resolve a difference of {args.seeds_for:g}\n")
        print("\n".join(seeds_for_lines(verdict_rows(jobs, common), args.seeds_for)) or "no comparisons yet")
    if args.wandb_report or args.wandb_workspace:
        from .sweeps.wandb_report import publish_wandb_report  # a second to import: only when asked

        try:
            lines = publish_wandb_report(args.sweep_dir, rows, args.entity, args.project, args.wandb_workspace)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
