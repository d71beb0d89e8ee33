"""What every benchmark script shares: the checkout, `run.py` run as a user runs it (timed, with W&B's
and Ray's variables left out so that no run reaches a server or a cluster), the `metrics.json` a run
wrote, and a result written as `<out>.json` and `<out>.md`. tests/helpers.py runs `run.py` with it too.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:  # the checkout's package, also where it is not installed
    sys.path.insert(0, str(ROOT / "src"))


def run_env(**extra: str) -> dict[str, str]:
    """This process's environment without W&B's and Ray's variables, plus `extra`."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "RAY_"))} | extra


def run_command(*args: str, tree: Path = ROOT) -> list[str]:
    """`python run.py *args` with `tree`'s run.py (a checkout, or a commit unpacked elsewhere)."""
    return [sys.executable, str(tree / "run.py"), *args]


class Finished(NamedTuple):
    wall_s: float
    peak_rss_mb: float  # the largest resident set of the run's process, or of a process it waited for


def run_py(*args: str, cwd: Path, tree: Path = ROOT, env: dict | None = None, what: str = "the run") -> Finished:
    """Run `python run.py *args` in `cwd` to its end: its wall seconds and peak memory. A failure ends
    the benchmark naming `what`, with the end of the run's output."""
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as output:
        proc = subprocess.Popen(
            run_command(*args, tree=tree), cwd=cwd, env=env or run_env(), stdout=output, stderr=output
        )
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = code = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        if code != 0:
            output.seek(0)
            raise SystemExit(f"{what} failed (exit {code}):\n{output.read()[-6000:]}")
    return Finished(seconds, usage.ru_maxrss / 1024)  # Linux counts KiB


def read_metrics(where: Path) -> dict:
    """A run's metrics: `where` is its metrics.json, its run directory, or a root (paths.root_dir) that
    holds exactly one run."""
    if where.is_file():
        return json.loads(where.read_text())
    if (where / "metrics.json").is_file():
        return json.loads((where / "metrics.json").read_text())
    [found] = where.glob("logs/runs/*/metrics.json")
    return json.loads(found.read_text())


def write_result(out: Path, result: dict, markdown: str) -> None:
    """`<out>.json` and `<out>.md`, and the markdown printed."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown if markdown.endswith("\n") else markdown + "\n")
    print(markdown)
