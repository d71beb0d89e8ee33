"""Train and evaluate one variant: `python run.py attention=shunted mlp=detail_specific`.

`python run.py --help` lists the config groups; `-m` sweeps (see README). Exit codes: 0 done,
1 any other failure (Hydra's own messages among them), 2 a config error, 3 a non-finite loss,
4 a problem with the data; each of 2-4 is one line naming what to fix. 75: stopped by a signal
(SIGTERM, SIGINT, SIGUSR1/2) with the step reached saved; the same command resumes (docs/cluster.md).
"""

import json
import logging
import os
import shlex
import shutil
import sys
import warnings
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

# Nothing imported up here loads torch: --help, --cfg and a config error answer in a second or two.
# The training stack (torch, Lightning, timm) is imported in main() once the config is known good.
from shunted_lab.config import CONF_DIR, check_config, error_line, missing_extra, unknown_key, unknown_option
from shunted_lab.exits import (
    EXIT_CONFIG_ERROR,
    EXIT_DATA_ERROR,
    EXIT_NON_FINITE_LOSS,
    EXIT_PREEMPTED,
    ConfigError,
    DataError,
    NonFiniteLossError,
    Preempted,
    record_stop_signals,
)
from shunted_lab.files import write_json
from shunted_lab.run_dirs import (
    FAILED_FILE,
    HEADLINE,
    JOB_FILE,
    METRICS_FILE,
    PREEMPTED_FILE,
    agent_sweep_id,
    last_checkpoint,
    set_aside_other_job,
    sweep_id_of,
)

log = logging.getLogger("run")


def fail(message: str, code: int) -> None:
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        log.exception(message)
    else:
        log.error("%s (HYDRA_FULL_ERROR=1 shows the traceback)", message)
    sys.exit(code)


def resume_interrupted(cfg: DictConfig, output_dir: Path, in_sweep: bool, overrides: list[str]) -> float | None:
    """Running a command again continues it: a sweep skips its completed jobs, and a run or job stopped
    before its end (by a signal, a kill, a failure) resumes from its checkpoints/last.ckpt. A sweep job
    continues only the job with its own overrides: another's files are set aside (run_dirs)."""
    if in_sweep:
        kept = set_aside_other_job(output_dir, overrides)
        if kept is not None:
            log.warning("%s held a job with other overrides; its files are kept in %s", output_dir.name, kept)
    metrics = output_dir / METRICS_FILE
    if in_sweep and metrics.is_file():
        done = json.loads(metrics.read_text())
        if cfg.optimized_metric in done:
            log.info("%s is complete (metrics.json); skipped", output_dir.name)
            return done[cfg.optimized_metric]
    for record in (FAILED_FILE, PREEMPTED_FILE):
        (output_dir / record).unlink(missing_ok=True)
    if cfg.ckpt_path is None and last_checkpoint(output_dir).is_file() and (in_sweep or not metrics.is_file()):
        log.info("%s was interrupted; resuming from checkpoints/last.ckpt", output_dir.name)
        cfg.ckpt_path = "last"
    return None


def record_stop(stop: Preempted, output_dir: Path, overrides: list[str], in_sweep: bool) -> None:
    """Write preempted.json (the sweep's report lists the job as preempted) and say how to resume."""
    if in_sweep:
        resume = "rerun the sweep's command"
    else:  # the same command, in the same run directory
        resume = shlex.join(["python", "run.py", *overrides, f"hydra.run.dir={output_dir}"])
    checkpoint = str(stop.checkpoint) if stop.checkpoint else None
    write_json(
        output_dir / PREEMPTED_FILE,
        {"signal": stop.signal_name, "step": stop.step, "checkpoint": checkpoint, "resume": resume},
    )
    log.warning("%s%s; to resume: %s", f"{output_dir.name}: " if in_sweep else "", stop, resume)


def tell_where(output_dir: Path, in_sweep: bool) -> None:
    """The end of a run: its result, where it wrote and how to compare it with other variants; a
    sweep's job says its result in one line (the sweep's report compares the jobs)."""
    metrics = json.loads((output_dir / METRICS_FILE).read_text())
    val, test = (f"{split}/{HEADLINE[metrics['objective']]}" for split in ("val", "test"))
    result = f"{val} {metrics[val]:.4f}, {test} {metrics[test]:.4f}"
    if in_sweep:
        log.info("%s: %s", output_dir.name, result)
        return
    lines = [
        f"done: {result} ({metrics['attention']} x {metrics['mlp']}, {metrics['wall_time_s']:.0f} s)",
        f"  run directory    {output_dir}",
        f"  metrics          {output_dir / METRICS_FILE}",
        f"  best checkpoint  {metrics['best_checkpoint'] or '(none)'}",
    ]
    offline = sorted(output_dir.glob("wandb/offline-run-*"))
    if offline:
        lines.append(f"  W&B (offline)    wandb sync {offline[-1]}")
    objective = "" if metrics["objective"] == "classification" else f" objective={metrics['objective']}"
    lines.append(f"  compare variants python run.py -m{objective} attention=vit,pvt,swin,shunted mlp={metrics['mlp']}")
    log.info("\n".join(lines))


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    output_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    # A job a W&B agent started is one job of a sweep, as a multirun's are.
    in_sweep = multirun or agent_sweep_id() is not None
    try:
        if multirun:
            if hydra_cfg.launcher._target_.endswith("BasicLauncher"):  # the jobs run in this process
                record_stop_signals(cfg.stop_signals)
            from lightning.fabric.plugins.environments import SLURMEnvironment

            if cfg.trainer.get("strategy") == "ddp" and not SLURMEnvironment.detect():
                raise ConfigError(
                    "trainer.strategy=ddp re-executes the command line, which breaks a local multirun; "
                    "use trainer.strategy=ddp_spawn here, or hydra/launcher=slurm on a cluster"
                )
            if cfg.sweep_id is None:
                cfg.sweep_id = sweep_id_of(Path(hydra_cfg.sweep.dir))
        if in_sweep and Preempted.received:  # this process was told to stop: the jobs left wait for a rerun
            log.warning("%s not started: the sweep was stopped by %s", output_dir.name, Preempted.received)
            return None
        if cfg.task == "train":
            overrides = list(hydra_cfg.overrides.task)
            done = resume_interrupted(cfg, output_dir, in_sweep, overrides)
            if done is not None:
                return done
            # The one check of this run's config: before anything loads torch, so that a mistake answers at
            # once (tests/test_cli.py), and after the resume, which may have pointed ckpt_path at last.ckpt.
            check_config(cfg)
            if in_sweep:
                write_json(output_dir / JOB_FILE, {"overrides": overrides})
        if cfg.task in ("eval", "analyze"):
            from shunted_lab.checkpoints import analyze_checkpoints, evaluate_checkpoints

            task = evaluate_checkpoints if cfg.task == "eval" else analyze_checkpoints
            task(cfg, list(hydra_cfg.overrides.task))
            return None
        from lightning.fabric.utilities.rank_zero import rank_zero_only

        from shunted_lab.training.fit import train

        result = train(cfg, config_checked=True)
        if rank_zero_only.rank == 0:
            tell_where(output_dir, in_sweep)
        return result
    except Preempted as stop:
        record_stop(stop, output_dir, list(hydra_cfg.overrides.task), in_sweep)
        stop.hand_over()  # under submitit: its handler requeues the job, and exits
        if in_sweep:
            return None  # the sweep's report lists the job as preempted; the sweep ends with EXIT_PREEMPTED
        sys.exit(EXIT_PREEMPTED)
    except (NonFiniteLossError, DataError) as e:
        if in_sweep:
            raise  # the sweep records this job as failed (in its directory) and goes on with the others
        fail(
            f"stopped: {error_line(e)}", EXIT_NON_FINITE_LOSS if isinstance(e, NonFiniteLossError) else EXIT_DATA_ERROR
        )
    except ConfigError as e:
        if in_sweep:
            raise
        if {p.name for p in output_dir.iterdir()} <= {".hydra", "run.log"}:
            shutil.rmtree(output_dir)  # nothing but Hydra's own record was written
        fail(f"config error: {e}", EXIT_CONFIG_ERROR)


if __name__ == "__main__":
    # hydra/launcher=ray is our file over the Ray plugin's schema of the same name, on purpose (its keys).
    warnings.filterwarnings("ignore", message="(?s).*is validated against ConfigStore schema with the same name")
    problem = unknown_option(sys.argv[1:]) or missing_extra(sys.argv[1:]) or unknown_key(sys.argv[1:])
    if problem:  # Hydra's own message is four lines or a dozen; this one names the key and what is allowed
        print(f"config error: {problem}", file=sys.stderr)
        sys.exit(EXIT_CONFIG_ERROR)
    main()
