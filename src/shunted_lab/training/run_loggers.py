"""A run's loggers from its config (conf/logger), what every task logs to them, and their end.

Used by training (fit.py) and by the tasks on trained checkpoints (checkpoints/tasks.py).
"""

from pathlib import Path

from hydra.utils import instantiate
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig, OmegaConf

from ..exits import EXIT_PREEMPTED
from ..run_dirs import WANDB_ID_FILE, sweep_tag
from ..wandb_env import wandb_offline


def build_loggers(cfg: DictConfig) -> list:
    loggers = []
    for logger_cfg in (cfg.get("logger") or {}).values():
        logger_cfg = OmegaConf.to_container(logger_cfg, resolve=True)
        if logger_cfg["_target_"].endswith("WandbLogger"):
            logger_cfg["offline"] = wandb_offline(logger_cfg["offline"])
            id_file = Path(cfg.paths.output_dir) / WANDB_ID_FILE
            if logger_cfg["id"] is None and id_file.is_file():  # a resumed run continues its W&B run
                logger_cfg.update(id=id_file.read_text().strip(), resume="allow")
            if logger_cfg.get("log_model") is None:  # a sweep would upload every job's checkpoint
                logger_cfg["log_model"] = cfg.get("sweep_id") is None
            if cfg.get("sweep_id") is not None:
                logger_cfg["tags"] = [*logger_cfg["tags"], sweep_tag(cfg.sweep_id)]
        loggers.append(instantiate(logger_cfg))
    return loggers


def close_loggers(loggers: list, status: str) -> None:
    """Flush and close every logger; `status` is success, failed or preempted (W&B marks the run so)."""
    for logger in loggers:
        logger.finalize("success" if status == "success" else "failed")
    if not any(isinstance(lg, WandbLogger) for lg in loggers):
        return
    import wandb

    if status == "preempted" and wandb.run is not None:
        wandb.run.mark_preempting()
    wandb.finish(exit_code={"success": 0, "failed": 1}.get(status, EXIT_PREEMPTED))


def log_analysis(loggers: list, result: dict, out: Path, prefix: str = "analysis") -> None:
    """The analysis's summary as metrics and, on W&B, its figures as images."""
    for logger in loggers:
        logger.log_metrics({f"{prefix}/{k}": v for k, v in result["summary"].items()})
        if isinstance(logger, WandbLogger):
            for name in result["figures"]:
                logger.log_image(key=f"{prefix}/{Path(name).stem}", images=[str(out / name)])
