"""Score trained checkpoints without training: `python run.py task=eval ckpt_path=<run | sweep | file>`.

The data is the run's own unless the command line names it (`data=cifar10`, or single keys such as
`data.image_size=96` on top of the run's). Writes metrics.json into this evaluation's directory;
for a sweep, also eval.json into every job directory, and the sweep report gains its columns.
"""

import logging
import time
from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from .config import ConfigError, check_config
from .module import ImageClassifier
from .report import EVAL_FILE, write_report
from .train import build_loggers, close_loggers, user_step, write_json
from .trained import Source, architecture, find_sources, is_run_dir, load_model

log = logging.getLogger(__name__)

SPLITS = ("val", "test")


def data_config(cfg: DictConfig, source: Source, overrides: list[str]) -> DictConfig:
    """The run's data config with the command line's data keys on top; `data=...` replaces it."""
    keys = [o.lstrip("+").split("=", 1)[0] for o in overrides]
    if "data" in keys or not source.run_config:
        return cfg.data
    data = OmegaConf.create(source.run_config["data"])
    for key in keys:
        if key.startswith("data."):
            OmegaConf.update(data, key.removeprefix("data."), OmegaConf.select(cfg, key), force_add=True)
    return data


def score(cfg: DictConfig, source: Source, overrides: list[str]) -> dict:
    data_cfg = data_config(cfg, source, overrides)
    datamodule = user_step("data", lambda: instantiate(data_cfg))
    arch = architecture(source, cfg)
    model = load_model(source, arch, datamodule.num_classes)
    optim = (source.run_config or {}).get("optim") or OmegaConf.to_container(cfg.optim, resolve=True)
    module = ImageClassifier(model, datamodule.num_classes, **optim, channels_last=cfg.channels_last)
    trainer: L.Trainer = instantiate(
        cfg.trainer, logger=False, callbacks=[], enable_checkpointing=False, enable_progress_bar=False
    )
    results = {}
    for split in cfg.eval_splits:
        run = trainer.validate if split == "val" else trainer.test
        results.update(run(module, datamodule=datamodule, verbose=False)[0])
    return {
        **{k: results[k] for k in sorted(results)},
        "checkpoint": str(source.checkpoint),
        "run_dir": str(source.run_dir) if source.run_dir else None,
        "model": arch.model.name,
        "attention": arch.attention.name,
        "mlp": arch.mlp.name,
        "data": OmegaConf.to_container(data_cfg, resolve=True),
        "splits": list(cfg.eval_splits),
    }


def evaluate(cfg: DictConfig, overrides: list[str]) -> dict:
    """Every checkpoint ckpt_path stands for, scored; {source name: metrics}."""
    start = time.perf_counter()
    if cfg.ckpt_path is None:
        raise ConfigError("task=eval needs ckpt_path=<run dir | sweep dir | .ckpt | official release file>")
    bad = sorted(set(cfg.eval_splits) - set(SPLITS))
    if bad or not cfg.eval_splits:
        raise ConfigError(f"eval_splits={list(cfg.eval_splits)} is not allowed; expected a non-empty list of {SPLITS}")
    check_config(cfg)
    sources = user_step("ckpt_path", lambda: find_sources(cfg.ckpt_path))
    path = Path(cfg.ckpt_path)
    sweep_dir = path if path.is_dir() and not is_run_dir(path) else None
    L.seed_everything(cfg.seed)
    loggers = build_loggers(cfg)
    succeeded = False
    try:
        scored = {}
        for source in sources:
            metrics = scored[source.name] = score(cfg, source, overrides)
            numbers = {k: v for k, v in metrics.items() if isinstance(v, float)}
            prefix = f"{source.name}/" if sweep_dir else ""
            for logger in loggers:
                logger.log_metrics({prefix + k: v for k, v in numbers.items()})
            if sweep_dir:
                write_json(source.run_dir / EVAL_FILE, metrics)
            log.info("%s: %s", source.name, ", ".join(f"{k} {v:.4f}" for k, v in numbers.items()))
        for logger in loggers:
            logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
        write_json(
            Path(cfg.paths.output_dir) / "metrics.json",
            {"ckpt_path": str(cfg.ckpt_path), "scored": scored, "wall_time_s": time.perf_counter() - start},
        )
        if sweep_dir:
            write_report(sweep_dir)
            log.info("sweep report with the evaluation's columns: %s", sweep_dir / "summary.md")
        succeeded = True
    finally:
        close_loggers(loggers, succeeded)
    return scored
