"""Train and evaluate one variant: `python run.py attention=shunted mlp=detail_specific`.

`python run.py --help` lists the config groups; `-m` sweeps (see README).
"""

import json
import logging
import shutil
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.fabric.plugins.environments import SLURMEnvironment
from omegaconf import DictConfig

from shunted_lab.callbacks import NonFiniteLossError
from shunted_lab.config import ConfigError
from shunted_lab.report import FAILED_FILE
from shunted_lab.train import train

log = logging.getLogger("run")


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
def main(cfg: DictConfig) -> float:
    hydra_cfg = HydraConfig.get()
    output_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        if multirun:
            if cfg.trainer.get("strategy") == "ddp" and not SLURMEnvironment.detect():
                raise ConfigError(
                    "trainer.strategy=ddp re-executes the command line, which breaks a local multirun; "
                    "use trainer.strategy=ddp_spawn here, or hydra/launcher=slurm on a cluster"
                )
            done = resume_sweep_job(cfg, output_dir)
            if done is not None:
                return done
        return train(cfg)
    except NonFiniteLossError as e:
        if multirun:
            raise
        log.error("stopped: %s", e)
        sys.exit(3)
    except ConfigError as e:
        if multirun:
            raise  # the sweep records this job as failed (in its directory) and goes on with the others
        if {p.name for p in output_dir.iterdir()} <= {".hydra", "run.log"}:
            shutil.rmtree(output_dir)  # nothing but Hydra's own record was written
        log.error("config error: %s", e)
        sys.exit(2)


if __name__ == "__main__":
    main()
