"""Rules a composed config must satisfy before anything trains or writes.

Each failure is one ConfigError line naming the key, the value and what is allowed.
"""

import hashlib
import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from .checkpointing import resolve_resume_path, unsafe_globals

# conf/paths: the launch directory, resolvable before Hydra's runtime config exists (in the sweeper).
OmegaConf.register_new_resolver("cwd", os.getcwd, replace=True)

AGENT_SWEEP_PREFIX = "wandb-"  # logs/multirun/wandb-<sweep id>: the directory of a W&B agent's sweep


def agent_sweep_id() -> str | None:
    """The W&B sweep whose agent started this process (`wandb agent` sets WANDB_SWEEP_ID), if any."""
    return os.environ.get("WANDB_SWEEP_ID") or None


def run_dir(log_dir: str, run: str, overrides: str) -> str:
    """hydra.run.dir: logs/runs/<run>, or for a job a W&B agent started logs/multirun/wandb-<sweep id>/<its
    overrides>: the same overrides find the same directory."""
    sweep = agent_sweep_id()
    if not sweep:
        return f"{log_dir}/runs/{run}"
    name = overrides.replace("/", "_") or "defaults"  # a path in a value must not nest directories
    if len(name) > 120:
        name = f"{name[:100]}-{hashlib.sha1(overrides.encode()).hexdigest()[:8]}"
    return f"{log_dir}/multirun/{AGENT_SWEEP_PREFIX}{sweep}/{name}"


OmegaConf.register_new_resolver("run_dir", run_dir, replace=True)


def sweep_id_of(sweep_dir: Path) -> str:
    """A sweep's id: a W&B agent's own, or the directory's name and a hash of its path (two machines
    logging sweeps of one name to one W&B project keep them apart)."""
    sweep_dir = Path(sweep_dir).resolve()
    if sweep_dir.name.startswith(AGENT_SWEEP_PREFIX):
        return sweep_dir.name.removeprefix(AGENT_SWEEP_PREFIX)
    return f"{sweep_dir.name[:48]}-{hashlib.sha1(str(sweep_dir).encode()).hexdigest()[:6]}"


# A config file's way to demand a key from the command line where `???` cannot: an experiment's `???`
# does not replace the value a group already gave (OmegaConf's merge keeps it).
REQUIRED = "<required>"
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
PRECISIONS = ("32-true", "32", "bf16-mixed", "bf16-true", "16-mixed", "16-true", "64-true")


class ConfigError(ValueError):
    """A mistake in the config (or in a file it names) that the user can fix."""


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


RULES = (
    ("seed", _int, "an integer"),
    ("data.batch_size", lambda v: _int(v) and v > 0, "a positive integer"),
    ("data.num_workers", lambda v: _int(v) and v >= 0, "an integer >= 0"),
    ("data.image_size", lambda v: _int(v) and v >= 8, "an integer >= 8"),
    ("trainer.max_epochs", lambda v: v == -1 or (_int(v) and v > 0), "a positive integer, or -1 for no limit"),
    ("trainer.precision", lambda v: str(v) in PRECISIONS, f"one of {list(PRECISIONS)}"),
    ("optim.lr", lambda v: _number(v) and v > 0, "a number > 0"),
    ("optim.weight_decay", lambda v: _number(v) and v >= 0, "a number >= 0"),
    ("optim.warmup_epochs", lambda v: _number(v) and v >= 0, "a number >= 0"),
    ("optim.label_smoothing", lambda v: _number(v) and 0 <= v < 1, "a number in [0, 1)"),
    ("optim.mixup", lambda v: _number(v) and v >= 0, "a number >= 0 (0 = off)"),
    ("optim.cutmix", lambda v: _number(v) and v >= 0, "a number >= 0 (0 = off)"),
    ("optim.ema_decay", lambda v: v is None or (_number(v) and 0 < v < 1), "null or a number in (0, 1)"),
    ("optim.fused", lambda v: isinstance(v, bool), "true or false"),
    ("compile", lambda v: isinstance(v, bool) or v in COMPILE_MODES, f"true, false or one of {list(COMPILE_MODES)}"),
    ("model.drop_path_rate", lambda v: v is None or (_number(v) and 0 <= v < 1), "null or a number in [0, 1)"),
    # Absent (null) without a W&B logger.
    ("logger.wandb.log_model", lambda v: v is None or isinstance(v, bool), "null, true or false"),
    ("logger.wandb.predictions", lambda v: v is None or (_int(v) and v >= 0), "an integer >= 0 (0 = none)"),
    ("logger.wandb.confusion_matrix", lambda v: v is None or isinstance(v, bool), "true or false"),
)


def required_keys(node: dict, prefix: str = "") -> list[str]:
    """The keys still set to REQUIRED, at any depth."""
    found = []
    for key, value in node.items():
        if isinstance(value, dict):
            found += required_keys(value, f"{prefix}{key}.")
        elif value == REQUIRED:
            found.append(f"{prefix}{key}")
    return found


def check_config(cfg: DictConfig) -> None:
    missing = sorted(OmegaConf.missing_keys(cfg)) + required_keys(OmegaConf.to_container(cfg))
    if missing:
        raise ConfigError(f"{missing[0]} must be set (it has no default), e.g. {missing[0]}=...")
    for key, ok, allowed in RULES:
        value = OmegaConf.select(cfg, key)
        if not ok(value):
            raise ConfigError(f"{key}={value!r} is not allowed; expected {allowed}")
    if str(cfg.trainer.precision).startswith("16") and cfg.trainer.accelerator == "cpu":
        raise ConfigError(
            f"trainer.precision={cfg.trainer.precision} needs a GPU but trainer.accelerator=cpu; "
            "use bf16-mixed or 32-true on CPU"
        )
    # task=eval|analyze read ckpt_path themselves: it may also be a run or sweep directory.
    for key in ("ckpt_path", "model.checkpoint")[cfg.get("task", "train") != "train" :]:
        path = OmegaConf.select(cfg, key)
        if key == "ckpt_path":
            try:
                path = resolve_resume_path(path, cfg.paths.output_dir)
            except FileNotFoundError as e:
                raise ConfigError(str(e)) from e
        if path is None:
            continue
        if not Path(path).is_file():
            raise ConfigError(f"{key}={path!r} does not exist; expected a checkpoint file")
        check_checkpoint_file(key, path)


def check_checkpoint_file(key: str, path) -> None:
    """ConfigError unless `path` is a readable checkpoint that loads with weights_only."""
    try:
        refused = unsafe_globals(path)
    except ValueError as e:
        raise ConfigError(f"{key}: {e}") from e
    if refused:
        raise ConfigError(
            f"{key}={str(path)!r} would import {refused} when loaded; refusing it (only plain tensors and "
            "containers load, weights_only)"
        )
