"""One training job from a composed config: build -> fit -> validate/test the best checkpoint -> metrics.json."""

import logging
import os
import subprocess
import time
from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig, OmegaConf

from ..analysis import analyze_configured
from ..config import GRAPH_MODES, check_config, user_step
from ..data import ImageData
from ..exits import Preempted
from ..files import write_json, write_text
from ..models.factory import build_model
from ..models.stats import count_gmacs, count_params
from ..run_dirs import HEADLINE, METRICS_FILE, WANDB_ID_FILE, resolve_resume_path
from .callbacks import KeepFreedMemoryOnCPU, ModelSummary, RandomStateCheckpoint, TrainThroughput
from .checkpoint_io import AtomicCheckpointIO
from .class_predictions import CONFUSION_MATRIX_MAX_CLASSES, predict_split, wandb_media
from .console import quiet_libraries
from .loggers import WandbResultsLogger, build_loggers, close_loggers, log_analysis
from .mask_predictions import mask_table, predict_masks, write_mask_grid
from .objectives import build_module, check_data
from .preemption import StopSignals

log = logging.getLogger(__name__)


def train(cfg: DictConfig, config_checked: bool = False) -> float:
    """Fit, validate and test one job; its metrics.json in cfg.paths.output_dir. The config is checked
    first unless the caller did (run.py checks before it loads torch)."""
    start = time.perf_counter()
    quiet_libraries()
    if not config_checked:
        check_config(cfg)
    # From here on a stop signal ends the run without losing a step (preemption.py).
    with StopSignals(cfg.paths.output_dir, cfg.stop_signals) as stop:
        L.seed_everything(cfg.seed, workers=True)
        datamodule: ImageData = user_step("data", lambda: instantiate(cfg.data))
        check_data(cfg.objective.name, cfg.data.name, datamodule)
        model = user_step("model", lambda: build_model(cfg, datamodule.num_classes))
        size = datamodule.image_size  # an image folder may have fitted it to its images
        gmacs = user_step(f"data.image_size={size}", lambda: count_gmacs(model, size))
        summary = dict(
            objective=cfg.objective.name,
            model=cfg.model.name,
            attention=cfg.attention.name,
            mlp=cfg.mlp.name,
            data=datamodule.name,
            seed=cfg.seed,
            image_size=size,
            params=count_params(model),
            gmacs=gmacs,
        )
        optim = OmegaConf.to_container(cfg.optim, resolve=True)
        module_clip, trainer_clip = gradient_clipping(cfg)
        speed = dict(channels_last=cfg.channels_last, compile=cfg.compile, max_grad_norm=module_clip)
        module = user_step("optim", lambda: build_module(cfg.objective.name, model, datamodule, optim, **speed))

        # Nothing above writes a file: a config mistake leaves no half-made run behind.
        loggers = build_loggers(cfg)
        status = "failed"
        try:
            metrics = fit_and_evaluate(cfg, module, datamodule, loggers, summary, start, stop, trainer_clip)
            status = "success"
        except BaseException as error:
            preempted = Preempted.behind(error)
            if preempted is None:
                raise
            status = "preempted"
            raise preempted from None  # the stop is what happened, whatever failed on its way out
        finally:
            # A failed sweep job must not leave its W&B run open: the next job's logger would reuse it.
            stop.closing()
            close_loggers(loggers, status)
    return metrics[cfg.optimized_metric]


def gradient_clipping(cfg: DictConfig) -> tuple[float | None, dict]:
    """Who clips trainer.gradient_clip_val: in a graph mode the module, inside the captured step
    (Lightning's clipping would run outside the graph, after the step it replays has applied the
    gradients), so Lightning is told not to; otherwise Lightning. (the module's max_grad_norm, the
    Trainer's overrides)."""
    if cfg.compile in GRAPH_MODES:
        return cfg.trainer.gradient_clip_val, {"gradient_clip_val": None}
    return None, {}


def fit_and_evaluate(
    cfg: DictConfig,
    module,
    datamodule,
    loggers: list,
    summary: dict,
    start: float,
    stop: StopSignals,
    trainer_clip: dict,
) -> dict:
    # The run's own callbacks after the configured ones: the NaN guard sees a step before it is saved.
    callbacks = [instantiate(c) for c in cfg.callbacks.values() if c is not None]
    callbacks += [stop, RandomStateCheckpoint(), KeepFreedMemoryOnCPU()]
    for callback in callbacks:
        if isinstance(callback, ModelSummary):
            callback.forward_flops = 2e9 * summary["gmacs"]
    plugins = [AtomicCheckpointIO()]
    if SLURMEnvironment.detect():  # submitit requeues a preempted job (conf/hydra/launcher/slurm.yaml), not Lightning
        plugins.append(SLURMEnvironment(auto_requeue=False))
    trainer: L.Trainer = instantiate(cfg.trainer, logger=loggers, callbacks=callbacks, plugins=plugins, **trainer_clip)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    code = git_commit()
    wandb_run = None
    for logger in loggers:
        logger.log_hyperparams({**resolved, "summary": summary, "git": code})
        if isinstance(logger, WandbLogger) and trainer.is_global_zero:
            run = logger.experiment
            run.summary.update(summary)
            write_text(Path(cfg.paths.output_dir) / WANDB_ID_FILE, run.id)
            wandb_run = dict(id=run.id, name=run.name, group=run.group, job_type=run.job_type, tags=list(run.tags))

    # Our checkpoints hold tensors and plain containers only: loaded weights_only (checkpoint_io.py).
    resume = resolve_resume_path(cfg.ckpt_path, cfg.paths.output_dir)
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume, weights_only=True)
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    results = {}
    for evaluate in (trainer.validate, trainer.test):
        scores = evaluate(module, datamodule=datamodule, ckpt_path=best or None, verbose=False, weights_only=True)
        results.update(scores[0])
    analysis = None
    if cfg.analysis.enabled and trainer.is_global_zero:  # the best checkpoint's weights are in the module now
        out = Path(cfg.paths.output_dir) / "analysis"
        analysis = analyze_configured(module.model, datamodule, cfg.analysis, out, checkpoint=best)
        log_analysis(loggers, analysis, out)
        log.info("analysis: %s (%.1f s)", out, analysis["seconds"])
    throughput = next((c for c in trainer.callbacks if isinstance(c, TrainThroughput)), None)
    metrics = {
        **{k: results[k] for k in sorted(results)},
        **summary,
        "train/images_per_sec": throughput.images_per_sec if throughput else None,
        "train/data_wait_share": throughput.data_wait_share if throughput else None,
        "train/first_step_s": throughput.first_step_s if throughput else None,
        "peak_gpu_memory_mb": TrainThroughput.peak_gpu_memory_mb(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),  # the GPUs a launcher gave the job
        **graph_metrics(module),
        "wall_time_s": time.perf_counter() - start,
        "started_at": time.time() - (time.perf_counter() - start),  # Unix time: when jobs ran side by side
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
        "best_checkpoint": best,
        "wandb": wandb_run,
        "analysis": analysis and analysis["summary"],
        "git": code,
        "config": resolved,
    }
    if trainer.is_global_zero:
        log_fit_end(loggers, module, datamodule, metrics, Path(cfg.paths.output_dir))
    if cfg.compile and metrics["train/first_step_s"] is not None:
        log.info("first training step (compilation included): %.1f s", metrics["train/first_step_s"])
    if trainer.is_global_zero:
        write_json(Path(cfg.paths.output_dir) / METRICS_FILE, metrics)
    return metrics


MASK_GRID_FILE = "val_masks.png"  # a segmentation run's first validation images, ground truth and prediction
MASK_GRID_IMAGES = 8


def log_fit_end(loggers: list, module, datamodule, metrics: dict, output_dir: Path) -> None:
    """The run's numbers into its W&B summary (panels compare runs by them), then the best checkpoint's
    validation predictions (classification: a table and a confusion matrix; segmentation: images with
    their masks, also drawn into the run directory) and artifact (loggers.WandbResultsLogger)."""
    start = time.perf_counter()
    masks = None
    if metrics["objective"] == "segmentation":
        count = max([MASK_GRID_IMAGES] + [lg.num_predictions for lg in loggers if isinstance(lg, WandbResultsLogger)])
        masks = predict_masks(module.model, datamodule, count)
        grid = write_mask_grid(masks, MASK_GRID_IMAGES, output_dir / MASK_GRID_FILE)
        log.info("validation masks: %s", grid)
    headline = HEADLINE[metrics["objective"]]
    scalars = {k: v for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    for logger in (lg for lg in loggers if isinstance(lg, WandbLogger)):
        logger.experiment.summary.update(scalars)
        if not isinstance(logger, WandbResultsLogger):
            continue
        media = {}
        if masks is not None and logger.num_predictions:
            media = {"val/masks": mask_table(masks, logger.num_predictions)}
        elif masks is None:
            whole = logger.log_confusion_matrix and datamodule.num_classes <= CONFUSION_MATRIX_MAX_CLASSES
            if whole or logger.num_predictions:
                batch = datamodule.batch_size
                predictions = predict_split(module.model, datamodule, batch, logger.num_predictions, whole=whole)
                media = wandb_media(predictions, logger.num_predictions, logger.log_confusion_matrix)
        keys = ("objective", "model", "attention", "mlp", "data", "seed", f"val/{headline}", f"test/{headline}")
        metadata = {k: metrics[k] for k in keys}
        logger.log_fit_end(media, metrics["best_checkpoint"], {**metadata, "git": metrics["git"]})
        log.info("W&B end of fit (predictions, artifact): %.1f s", time.perf_counter() - start)


def graph_metrics(module) -> dict:
    """The graph modes' one-time cost: graphs captured, and the seconds of the eager warm-up steps and
    captures before them (torch.compile's compilation included); None where nothing was captured."""
    graphs = module.graphs.context if module.graphs is not None else None
    if graphs is None or not graphs.capture:
        return {"cuda_graphs": None, "cuda_graphs_setup_s": None}
    log.info(
        "CUDA graphs: %d captured; warm-up and capture, compilation included: %.1f s", graphs.count, graphs.setup_s
    )
    return {"cuda_graphs": graphs.count, "cuda_graphs_setup_s": graphs.setup_s}


def git_commit() -> dict | None:
    """The commit of this code and whether tracked files differ from it; None outside a git checkout."""
    repo = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", repo, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", repo, "diff", "--quiet", "HEAD"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return {"commit": commit.stdout.strip(), "dirty": dirty.returncode != 0}
