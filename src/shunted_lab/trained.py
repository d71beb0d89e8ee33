"""Trained models back from disk, for evaluation and analysis without training.

A source is a run directory (its best checkpoint), a sweep directory (every job's), a Lightning
checkpoint, or an official release file. The architecture (model, attention, mlp) comes from the
config of the run that wrote the checkpoint; a file with no run around it uses the caller's.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from .build import build_model
from .config import ConfigError, check_checkpoint_file
from .models.pyramid import checkpoint_filter_fn
from .train import user_step

ARCHITECTURE = ("model", "attention", "mlp")


@dataclass
class Source:
    name: str  # the job directory's or the file's name
    checkpoint: Path
    run_dir: Path | None  # the run that wrote it, when there is one
    run_config: dict | None  # that run's config


def run_config(run_dir: Path) -> dict | None:
    """The run's resolved config from metrics.json, else Hydra's record of it."""
    metrics = run_dir / "metrics.json"
    if metrics.is_file():
        return json.loads(metrics.read_text())["config"]
    hydra_config = run_dir / ".hydra" / "config.yaml"
    return OmegaConf.to_container(OmegaConf.load(hydra_config)) if hydra_config.is_file() else None


def run_checkpoint(run_dir: Path) -> Path | None:
    """The best checkpoint metrics.json names (found in this directory, wherever it was written), else last.ckpt."""
    metrics = run_dir / "metrics.json"
    best = json.loads(metrics.read_text()).get("best_checkpoint") if metrics.is_file() else None
    for candidate in (best and run_dir / "checkpoints" / Path(best).name, run_dir / "checkpoints" / "last.ckpt"):
        if candidate and candidate.is_file():
            return candidate
    return None


def is_run_dir(path: Path) -> bool:
    return (path / ".hydra").is_dir() or (path / "checkpoints").is_dir()


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


def architecture(source: Source, cfg: DictConfig) -> DictConfig:
    """model/attention/mlp of the run that wrote the checkpoint, else of `cfg`."""
    chosen = source.run_config or OmegaConf.to_container(cfg, resolve=True)
    return OmegaConf.create({k: chosen[k] for k in ARCHITECTURE})


def _describe(arch: DictConfig) -> str:
    return f"model={arch.model.name} attention={arch.attention.name} mlp={arch.mlp.name}"


def load_model(source: Source, arch: DictConfig, num_classes: int) -> nn.Module:
    """The checkpoint's network, built as `arch` says; ConfigError when they do not fit together."""
    key = f"ckpt_path={str(source.checkpoint)!r}"
    check_checkpoint_file("ckpt_path", source.checkpoint)
    ckpt = torch.load(source.checkpoint, map_location="cpu", weights_only=True)
    lightning = isinstance(ckpt, dict) and "pytorch-lightning_version" in ckpt
    if lightning:
        state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    else:  # an official release file: bare, or a training checkpoint that holds it under "model"
        state = ckpt.get("model", ckpt.get("state_dict", ckpt)) if isinstance(ckpt, dict) else {}
    head = state.get("head.weight")
    if head is not None and head.shape[0] != num_classes:
        raise ConfigError(
            f"{key} has a {head.shape[0]}-class head but the data has {num_classes} classes; "
            "evaluate it on the data it was trained for (data=...)"
        )
    # The weights come from this file only (a run that started from a release file does not reload it).
    arch.model.checkpoint = None
    model = user_step("model", lambda: build_model(arch, num_classes))
    if not lightning:
        try:  # release keys -> this model's, as the timm entry point maps them
            state = checkpoint_filter_fn(state, model)
        except KeyError as e:
            raise ConfigError(f"{key} does not fit {_describe(arch)} ({e.args[0][:300]})") from e
    mismatch = state_mismatch(model.state_dict(), state)
    if mismatch:
        raise ConfigError(f"{key} does not fit {_describe(arch)}: {mismatch}; name the variant it was trained as")
    model.load_state_dict(state)
    return model.eval()


def state_mismatch(expected: dict, found: dict) -> str:
    """'' when the keys and shapes agree, else what differs, with examples."""
    parts = []
    for what, keys in (
        ("missing", [k for k in expected if k not in found]),
        ("unexpected", [k for k in found if k not in expected]),
        ("of another shape", [k for k in expected if k in found and expected[k].shape != found[k].shape]),
    ):
        if keys:
            parts.append(f"{len(keys)} keys {what} (e.g. {', '.join(keys[:2])})")
    return "; ".join(parts)
