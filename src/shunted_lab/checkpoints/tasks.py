"""Tasks on trained checkpoints, without training: `python run.py task=eval|analyze ckpt_path=<run | sweep | file>`.

eval scores the checkpoints with the training metrics; analyze looks inside them (analysis/).
The data is the run's own unless the command line names it (`data=cifar10`, or single keys such as
`data.image_size=96` on top of the run's: evaluation at another resolution, where swin keeps its
windows unless `model.window_sizes=...` names new ones, and resizes its bias tables for them).
Each task writes metrics.json into its own directory; for a sweep, every job directory also gets
eval.json or analysis/, and the sweep report gains their columns.
"""

import logging
import time
from collections.abc import Callable
from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ..analysis import analyze_configured
from ..config import check_config, override_key, user_step
from ..exits import ConfigError
from ..files import write_json
from ..models.factory import objective_of
from ..models.stats import count_gmacs
from ..run_dirs import EVAL_FILE, METRICS_FILE
from ..sweeps.write import write_report
from ..training.callbacks import KeepFreedMemoryOnCPU
from ..training.console import quiet_libraries
from ..training.loggers import build_loggers, close_loggers, log_analysis
from ..training.objectives import build_module, check_data
from .sources import Source, architecture, find_sources, is_run_dir, load_model

log = logging.getLogger(__name__)

EVAL_SPLITS = ("val", "test")


def data_config(cfg: DictConfig, source: Source, overrides: list[str]) -> DictConfig:
    """The run's data config with the command line's data keys on top; `data=...` replaces it."""
    keys = [override_key(o) for o in overrides]
    if "data" in keys or not source.run_config:
        return cfg.data
    data = OmegaConf.create(source.run_config["data"])
    for key in keys:
        if key.startswith("data."):
            OmegaConf.update(data, key.removeprefix("data."), OmegaConf.select(cfg, key), force_add=True)
    return data


def score(cfg: DictConfig, source: Source, model, datamodule, loggers: list, in_sweep: bool) -> dict:
    # The run's recipe; the command's for keys newer than the run's config (or with no run around the file).
    optim = {**OmegaConf.to_container(cfg.optim, resolve=True), **((source.run_config or {}).get("optim") or {})}
    objective = objective_of(OmegaConf.create(source.run_config or cfg)).name
    # The command's speed switches: compile=cudagraphs scores in CUDA graph replays.
    module = build_module(objective, model, datamodule, optim, channels_last=cfg.channels_last, compile=cfg.compile)
    trainer: L.Trainer = instantiate(
        cfg.trainer,
        logger=False,
        callbacks=[KeepFreedMemoryOnCPU()],
        enable_checkpointing=False,
        enable_progress_bar=False,
    )
    results = {}
    for split in cfg.eval_splits:
        run = trainer.validate if split == "val" else trainer.test
        results.update(run(module, datamodule=datamodule, verbose=False)[0])
    results = {k: results[k] for k in sorted(results)}
    for logger in loggers:
        logger.log_metrics({(f"{source.name}/" if in_sweep else "") + k: v for k, v in results.items()})
    log.info("%s: %s", source.name, ", ".join(f"{k} {v:.4f}" for k, v in results.items()))
    results["splits"] = list(cfg.eval_splits)
    if in_sweep:
        write_json(source.run_dir / EVAL_FILE, results)
    return results


def look_inside(cfg: DictConfig, source: Source, model, datamodule, loggers: list, in_sweep: bool) -> dict:
    out = (source.run_dir if in_sweep else Path(cfg.paths.output_dir)) / "analysis"
    result = analyze_configured(model, datamodule, cfg.analysis, out, checkpoint=str(source.checkpoint))
    log_analysis(loggers, result, out, prefix=f"{source.name}/analysis" if in_sweep else "analysis")
    log.info("%s: analysis in %s (%.1f s)", source.name, out, result["seconds"])
    return result["summary"]


def for_each_checkpoint(cfg: DictConfig, overrides: list[str], work: Callable) -> dict:
    """work(cfg, source, model, datamodule, loggers, in_sweep) for every checkpoint ckpt_path stands for.

    In a sweep, work also writes its results beside each job, for the sweep report.
    """
    start = time.perf_counter()
    if cfg.ckpt_path is None:
        raise ConfigError(f"task={cfg.task} needs ckpt_path=<run dir | sweep dir | .ckpt | official release file>")
    quiet_libraries()
    check_config(cfg)
    sources = user_step("ckpt_path", lambda: find_sources(cfg.ckpt_path))
    path = Path(cfg.ckpt_path)
    sweep_dir = path if path.is_dir() and not is_run_dir(path) else None
    L.seed_everything(cfg.seed)
    loggers = build_loggers(cfg)
    status = "failed"
    try:
        done = {}
        for source in sources:
            data_cfg = data_config(cfg, source, overrides)
            datamodule = user_step("data", lambda: instantiate(data_cfg))  # noqa: B023 (called at once)
            arch = architecture(source, cfg, overrides)
            check_data(objective_of(arch).name, data_cfg.name, datamodule)
            model = load_model(source, arch, datamodule.num_classes)
            size = datamodule.image_size  # another resolution than the run's must fit every stage's map
            gmacs = user_step(f"data.image_size={size}", lambda: count_gmacs(model, size))  # noqa: B023
            done[source.name] = {
                **work(cfg, source, model, datamodule, loggers, sweep_dir is not None),
                "checkpoint": str(source.checkpoint),
                "run_dir": str(source.run_dir) if source.run_dir else None,
                **{k: arch[k].name for k in ("model", "attention", "mlp")},
                "data": OmegaConf.to_container(data_cfg, resolve=True),
                "gmacs": gmacs,
            }
        for logger in loggers:
            logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
        write_json(
            Path(cfg.paths.output_dir) / METRICS_FILE,
            {
                "task": cfg.task,
                "ckpt_path": str(cfg.ckpt_path),
                "done": done,
                "wall_time_s": time.perf_counter() - start,
            },
        )
        if sweep_dir:
            write_report(sweep_dir)
            log.info("sweep report with the new columns: %s", sweep_dir / "summary.md")
        status = "success"
    finally:
        close_loggers(loggers, status)
    return done


def evaluate_checkpoints(cfg: DictConfig, overrides: list[str]) -> dict:
    bad = sorted(set(cfg.eval_splits) - set(EVAL_SPLITS))
    if bad or not cfg.eval_splits:
        raise ConfigError(
            f"eval_splits={list(cfg.eval_splits)} is not allowed; expected a non-empty list of {EVAL_SPLITS}"
        )
    return for_each_checkpoint(cfg, overrides, score)


def analyze_checkpoints(cfg: DictConfig, overrides: list[str]) -> dict:
    return for_each_checkpoint(cfg, overrides, look_inside)
