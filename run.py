"""Train and evaluate one variant: `python run.py attention=shunted mlp=detail_specific`.

`python run.py --help` lists the config groups; `-m` sweeps (see README).
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
from omegaconf import DictConfig

from shunted_lab.callbacks import NonFiniteLossError
from shunted_lab.checkpoint_tasks import analyze, evaluate
from shunted_lab.config import ConfigError, agent_sweep_id, sweep_id_of
from shunted_lab.data import DataError
from shunted_lab.report import FAILED_FILE, error_line
from shunted_lab.train import train

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
    metrics = output_dir / "metrics.json"
    if metrics.is_file():
        done = json.loads(metrics.read_text())
        if cfg.optimized_metric in done:
            log.info("%s is complete (metrics.json); skipped", output_dir.name)
            return done[cfg.optimized_metric]
    (output_dir / FAILED_FILE).unlink(missing_ok=True)
    if cfg.ckpt_path is None and (output_dir / "checkpoints" / "last.ckpt").is_file():
        log.info("%s was interrupted; resuming from checkpoints/last.ckpt", output_dir.name)
        cfg.ckpt_path = "last"
    return None


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
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
        return train(cfg)
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
    main()
