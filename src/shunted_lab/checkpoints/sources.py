"""Trained models back from disk, for evaluation and analysis without training.

A source is a run directory (its best checkpoint), a sweep directory (every job's), a Lightning
checkpoint, or an official release file. The architecture (model, attention, mlp) comes from the
config of the run that wrote the checkpoint; a file with no run around it uses the caller's.
"""

import json
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from torch import nn

from ..config import override_key, user_step
from ..models.factory import build_model, describe
from ..models.weights import load_weights
from ..run_dirs import CHECKPOINT_DIR, METRICS_FILE, last_checkpoint

ARCHITECTURE = ("model", "attention", "mlp", "objective")  # runs from before objectives existed: classification
RESOLUTION_KEY = "model.window_sizes"  # the one architecture key that may follow the evaluation's resolution


@dataclass
class Source:
    name: str  # the job directory's or the file's name
    checkpoint: Path
    run_dir: Path | None  # the run that wrote it, when there is one
    run_config: dict | None  # that run's config


def run_config(run_dir: Path) -> dict | None:
    """The run's resolved config from metrics.json, else Hydra's record of it."""
    metrics = run_dir / METRICS_FILE
    if metrics.is_file():
        return json.loads(metrics.read_text())["config"]
    hydra_config = run_dir / ".hydra" / "config.yaml"
    return OmegaConf.to_container(OmegaConf.load(hydra_config)) if hydra_config.is_file() else None


def run_checkpoint(run_dir: Path) -> Path | None:
    """The best checkpoint metrics.json names (found in this directory, wherever it was written), else last.ckpt."""
    metrics = run_dir / METRICS_FILE
    best = json.loads(metrics.read_text()).get("best_checkpoint") if metrics.is_file() else None
    for candidate in (best and run_dir / CHECKPOINT_DIR / Path(best).name, last_checkpoint(run_dir)):
        if candidate and candidate.is_file():
            return candidate
    return None


def is_run_dir(path: Path) -> bool:
    return (path / ".hydra").is_dir() or (path / CHECKPOINT_DIR).is_dir()


def find_sources(path: str | Path) -> list[Source]:
    """Every checkpoint `path` stands for; FileNotFoundError names what was expected."""
    path = Path(path)
    if path.is_file():
        run_dir = path.parent.parent if is_run_dir(path.parent.parent) else None
        return [Source(path.name, path, run_dir, run_dir and run_config(run_dir))]
    if not path.is_dir():
        raise FileNotFoundError(f"{path} does not exist; expected a run or sweep directory, or a checkpoint file")
    job_dirs = [path] if is_run_dir(path) else sorted(p.parent for p in path.glob("*/.hydra"))
    sources = [
        Source(job.name, ckpt, job, run_config(job)) for job in job_dirs if (ckpt := run_checkpoint(job)) is not None
    ]
    if not sources:
        raise FileNotFoundError(f"{path} holds no checkpoints/ of a run (nor of a sweep's jobs)")
    return sources


def architecture(source: Source, cfg: DictConfig, overrides: list[str] = ()) -> DictConfig:
    """model/attention/mlp/objective of the run that wrote the checkpoint, else of `cfg`; a `model.window_sizes`
    the command line names goes on top (a new resolution's windows: swin resizes its tables when loading)."""
    chosen = source.run_config or OmegaConf.to_container(cfg, resolve=True)
    arch = OmegaConf.create({k: chosen[k] for k in ARCHITECTURE if k in chosen})
    if RESOLUTION_KEY in map(override_key, overrides):
        OmegaConf.update(arch, RESOLUTION_KEY, OmegaConf.select(cfg, RESOLUTION_KEY), force_add=True)
    return arch


def load_model(source: Source, arch: DictConfig, num_classes: int) -> nn.Module:
    """The checkpoint's network, built as `arch` says; ConfigError when they do not fit together."""
    # The weights come from this file only (a run that started from a release file does not reload it).
    arch.model.checkpoint = None
    model = user_step("model", lambda: build_model(arch, num_classes))
    load_weights(model, source.checkpoint, "ckpt_path", describe(arch))
    return model.eval()
