"""Compare the variant cells of a saved sweep: summary.md, summary.csv and PNG plots, and on W&B.

    python -m shunted_lab.report SWEEP_DIR [--wandb-report [--wandb-workspace] [--entity E] [--project P]]

The same files are written after every job of a sweep by its Hydra callback (sweeps/callback.py);
`--wandb-report` also builds the sweep's W&B Report (sweeps/wandb_report.py).
"""

import argparse
import sys
from pathlib import Path

from .sweeps.write import write_report


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m shunted_lab.report", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="a sweep directory (Hydra multirun or W&B agent)")
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
