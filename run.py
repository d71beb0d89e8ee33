"""Train and evaluate one variant: `python run.py attention=shunted mlp=detail_specific`.

`python run.py --help` lists the config groups; `-m` sweeps (see README). Exit codes: 0 done,
1 any other failure (Hydra's own messages among them), 2 a config error, 3 a non-finite loss,
4 a problem with the data; each of 2-4 is one line naming what to fix.
"""

import json
import logging
import os
import shutil
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.fabric.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig

from shunted_lab.checkpoints import analyze, evaluate
from shunted_lab.config import CONF_DIR, ConfigError, error_line, unknown_option
from shunted_lab.data import DataError
from shunted_lab.run_dirs import FAILED_FILE, METRICS_FILE, agent_sweep_id, last_checkpoint, sweep_id_of
from shunted_lab.training import train
from shunted_lab.training.callbacks import NonFiniteLossError

log = logging.getLogger("run")

EXIT_CONFIG_ERROR, EXIT_NON_FINITE_LOSS, EXIT_DATA_ERROR = 2, 3, 4


def fail(message: str, code: int) -> None:
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        log.exception(message)
    else:
        log.error("%s (HYDRA_FULL_ERROR=1 shows the traceback)", message)
    sys.exit(code)


def resume_sweep_job(cfg: DictConfig, output_dir: Path) -> float | None:
    """Re-running a sweep skips its completed jobs and resumes interrupted ones from last.ckpt."""
    metrics = output_dir / METRICS_FILE
    if metrics.is_file():
        done = json.loads(metrics.read_text())
        if cfg.optimized_metric in done:
            log.info("%s is complete (metrics.json); skipped", output_dir.name)
            return done[cfg.optimized_metric]
    (output_dir / FAILED_FILE).unlink(missing_ok=True)
    if cfg.ckpt_path is None and last_checkpoint(output_dir).is_file():
        log.info("%s was interrupted; resuming from checkpoints/last.ckpt", output_dir.name)
        cfg.ckpt_path = "last"
    return None


def tell_where(output_dir: Path, in_sweep: bool) -> None:
    """The end of a run: its result, where it wrote and how to compare it with other variants; a
    sweep's job says its result in one line (the sweep's report compares the jobs)."""
    metrics = json.loads((output_dir / METRICS_FILE).read_text())
    if in_sweep:
        log.info("%s: val/top1 %.4f test/top1 %.4f", output_dir.name, metrics["val/top1"], metrics["test/top1"])
        return
    lines = [
        f"done: val/top1 {metrics['val/top1']:.4f}, test/top1 {metrics['test/top1']:.4f} "
        f"({metrics['attention']} x {metrics['mlp']}, {metrics['wall_time_s']:.0f} s)",
        f"  run directory    {output_dir}",
        f"  metrics          {output_dir / METRICS_FILE}",
        f"  best checkpoint  {metrics['best_checkpoint'] or '(none)'}",
    ]
    offline = sorted(output_dir.glob("wandb/offline-run-*"))
    if offline:
        lines.append(f"  W&B (offline)    wandb sync {offline[-1]}")
    lines.append(f"  compare variants python run.py -m attention=vit,pvt,swin,shunted mlp={metrics['mlp']}")
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
            if cfg.trainer.get("strategy") == "ddp" and not SLURMEnvironment.detect():
                raise ConfigError(
                    "trainer.strategy=ddp re-executes the command line, which breaks a local multirun; "
                    "use trainer.strategy=ddp_spawn here, or hydra/launcher=slurm on a cluster"
                )
            if cfg.sweep_id is None:
                cfg.sweep_id = sweep_id_of(Path(hydra_cfg.sweep.dir))
        if in_sweep:
            done = resume_sweep_job(cfg, output_dir)
            if done is not None:
                return done
        if cfg.task in ("eval", "analyze"):
            (evaluate if cfg.task == "eval" else analyze)(cfg, list(hydra_cfg.overrides.task))
            return None
        result = train(cfg)
        if rank_zero_only.rank == 0:
            tell_where(output_dir, in_sweep)
        return result
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
    problem = unknown_option(sys.argv[1:])
    if problem:  # Hydra's own message is a dozen lines; this one names the group and its options
        print(f"config error: {problem}", file=sys.stderr)
        sys.exit(EXIT_CONFIG_ERROR)
    main()
