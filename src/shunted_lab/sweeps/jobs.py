"""A sweep's jobs read back from its directory: each job's overrides, its variant cell and seed, its
status (completed, preempted, failed or incomplete) and its numbers. The experiment scripts start here."""

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..config import override_key, override_value
from ..run_dirs import ANALYSIS_FILE, EVAL_FILE, FAILED_FILE, METRICS_FILE, PREEMPTED_FILE

EXTRA_FILES = {"eval": EVAL_FILE, "analysis": ANALYSIS_FILE}


def extra_metrics(job_dir: Path) -> dict[str, float]:
    """The numbers of a job's eval and analysis files (an analysis file's flat "summary")."""
    found = {}
    for prefix, name in EXTRA_FILES.items():
        if (job_dir / name).is_file():
            data = json.loads((job_dir / name).read_text())
            data = data.get("summary", data)
            found.update({f"{prefix}:{k}": v for k, v in data.items() if isinstance(v, int | float)})
    return found


@dataclass
class Job:
    dir: Path
    cell: str
    seed: str
    status: str  # completed | preempted | failed | incomplete
    overrides: list[str]  # its .hydra/overrides.yaml
    metrics: dict | None = None
    error: str | None = None


def job_number(overrides_file: Path) -> tuple[int, str]:
    """Launch order: a job directory is `<hydra.job.num>_<run name>` (10_ after 9_, not after 1_)."""
    name = overrides_file.parent.parent.name
    number = name.split("_", 1)[0]
    return (int(number), name) if number.isdigit() else (-1, name)


def load_jobs(sweep_dir: Path) -> tuple[list[Job], list[str]]:
    """The sweep's jobs, and the overrides common to all of them (not part of any cell's name)."""
    found = [
        (f.parent.parent, yaml.safe_load(f.read_text()) or [])
        for f in sorted(Path(sweep_dir).glob("*/.hydra/overrides.yaml"), key=job_number)
    ]
    common = [o for o in (found[0][1] if found else []) if all(o in overrides for _, overrides in found)]
    jobs = []
    for job_dir, overrides in found:
        seeds = [override_value(o) for o in overrides if override_key(o) == "seed"]
        cell = " ".join(o for o in overrides if o not in common and override_key(o) != "seed") or "(all jobs)"
        job = Job(job_dir, cell, seeds[0] if seeds else "0", "incomplete", overrides)
        if (job_dir / METRICS_FILE).is_file():
            job.status, job.metrics = "completed", json.loads((job_dir / METRICS_FILE).read_text())
            job.metrics.update(extra_metrics(job_dir))
        elif (job_dir / PREEMPTED_FILE).is_file():
            stop = json.loads((job_dir / PREEMPTED_FILE).read_text())
            saved = f"step {stop['step']} saved" if stop["checkpoint"] else "stopped before a step to save"
            job.status, job.error = "preempted", f"{stop['signal']}, {saved}"
        elif (job_dir / FAILED_FILE).is_file():
            job.status, job.error = "failed", json.loads((job_dir / FAILED_FILE).read_text())["error"]
        jobs.append(job)
    return jobs, common
