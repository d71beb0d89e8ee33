"""Sweeps on Ray (hydra/launcher=ray; `pip install -e ".[ray]"`): one job per GPU on this machine, or
on a Ray cluster. Hydra's own hydra-ray-launcher, with what a sweep of this project needs:

- **One job per GPU.** A job asks Ray for one GPU where the machine (or cluster) has GPUs, and for the
  CPUs that go with it (the machine's CPUs / GPUs); Ray runs as many jobs at once as the resources
  allow and gives each its own `CUDA_VISIBLE_DEVICES` (recorded in the job's metrics.json). Without
  GPUs a job asks for every CPU, so jobs run one at a time, each on the whole machine, as with the
  basic launcher. `hydra.launcher.ray.remote.num_gpus=8 trainer=ddp trainer.strategy=ddp_spawn`
  gives each job a whole 8-GPU machine.
- **Every job in a process of its own.** Ray reuses worker processes; `max_calls: 1` makes it start a
  fresh one for each job, so that nothing leaks from one job into the next: the W&B run, the
  random states, Lightning's and Hydra's globals, the console's log filters.
- **A stop signal to the sweep stops its jobs without losing a step.** The driver's handler asks Ray
  to cancel every job; a running job receives it as a SIGINT (Ray's interrupt of its main thread),
  which the run's StopSignals takes as "save the step reached, then stop" (training/preemption.py),
  and a job not started yet does not start. The sweep writes its report and exits 75; the same
  command resumes the stopped jobs and starts the others, as with any launcher (run.py).

The launcher itself is hydra_plugins/shunted_lab/ray_launcher.py (Hydra takes launchers from the
hydra_plugins package only). The sweep's report is rewritten after every job by the job's own
process (callback.SweepReport), under a lock in the sweep directory (write.py), so that two jobs
that end at once both count.
"""

import logging
import signal

import ray
from hydra.core.utils import JobReturn, JobStatus

from ..exits import Preempted
from ..files import STOP_SIGNALS

log = logging.getLogger(__name__)


def job_resources(remote: dict, cluster: dict) -> dict:
    """The Ray options of each job: the configured ones, with unset GPUs and CPUs filled from the
    cluster's resources (one GPU and its share of the CPUs; without GPUs, every CPU)."""
    gpus, cpus = cluster.get("GPU", 0), cluster.get("CPU", 1)
    options = {k: v for k, v in remote.items() if v is not None}
    options.setdefault("num_gpus", 1 if gpus else 0)
    if options["num_gpus"]:
        options.setdefault("num_cpus", max(1, int(cpus // gpus) * options["num_gpus"]))
    else:
        options.setdefault("num_cpus", cpus)
    options.setdefault("max_calls", 1)
    return options


def wait_for_jobs(jobs: list) -> list[JobReturn]:
    """Each job's JobReturn, from (Ray reference, overrides) pairs; a stop signal meanwhile cancels them
    all (those that run save and stop)."""
    refs = [ref for ref, _ in jobs]
    cancelled = []

    def stop(signum, frame) -> None:
        name = signal.Signals(signum).name
        if Preempted.received:
            return  # asked already: the jobs are saving
        Preempted.received = name
        log.warning("%s: stopping the sweep's jobs; each saves the step it reached", name)
        for ref in refs:
            ray.cancel(ref, force=False)
            cancelled.append(ref)

    previous = {s: signal.signal(getattr(signal, s), stop) for s in STOP_SIGNALS}
    try:
        pending = list(refs)
        while pending:  # ray.get would block in C, where Python cannot run the signal handler
            _, pending = ray.wait(pending, num_returns=len(pending), timeout=0.5)
    finally:
        for s, handler in previous.items():
            signal.signal(getattr(signal, s), handler)
    returns = []
    for ref, overrides in jobs:
        try:
            returns.append(ray.get(ref))
        except (ray.exceptions.TaskCancelledError, ray.exceptions.WorkerCrashedError) as e:
            if ref not in cancelled:
                raise
            log.warning("job %s not finished (%s): the rerun completes it", " ".join(overrides), type(e).__name__)
            returns.append(JobReturn(overrides=overrides, status=JobStatus.COMPLETED, _return_value=None))
    return returns
