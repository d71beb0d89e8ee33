"""Train and evaluate one variant: `python run.py attention=shunted mlp=detail_specific`.

`python run.py --help` lists the config groups; `-m` sweeps (see README).
"""

import logging
import shutil
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.fabric.plugins.environments import SLURMEnvironment
from omegaconf import DictConfig

from shunted_lab.config import ConfigError
from shunted_lab.train import train

log = logging.getLogger("run")


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    try:
        if (
            HydraConfig.get().mode == RunMode.MULTIRUN
            and cfg.trainer.get("strategy") == "ddp"
            and not SLURMEnvironment.detect()
        ):
            raise ConfigError(
                "trainer.strategy=ddp re-executes the command line, which breaks a local multirun; "
                "use trainer.strategy=ddp_spawn here, or hydra/launcher=slurm on a cluster"
            )
        return train(cfg)
    except ConfigError as e:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # the sweep records this job as failed (in its directory) and goes on with the others
        output_dir = Path(HydraConfig.get().runtime.output_dir)
        if {p.name for p in output_dir.iterdir()} <= {".hydra", "run.log"}:
            shutil.rmtree(output_dir)  # nothing but Hydra's own record was written
        log.error("config error: %s", e)
        sys.exit(2)


if __name__ == "__main__":
    main()
