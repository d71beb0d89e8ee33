"""Rules a composed config must satisfy before anything trains or writes, and the one-line errors
that name what the user can fix.

Each failure is one ConfigError line naming the key, the value and what is allowed.
"""

import difflib
import importlib.util
from pathlib import Path

from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf, open_dict

from .exits import ConfigError
from .files import STOP_SIGNALS
from .run_dirs import resolve_resume_path

# The Hydra configs: conf/ at the top of the checkout, linked here so that the package ships them and an
# installed copy finds them as a checkout does.
CONF_DIR = Path(__file__).resolve().parent / "conf"
# A config file's way to demand a key from the command line where `???` cannot: an experiment's `???`
# does not replace the value a group already gave (OmegaConf's merge keeps it).
REQUIRED = "<required>"
# The whole training step and evaluation in CUDA graphs (training/graphs/): with the blocks
# compiled, or with eager kernels. torch.compile's own "reduce-overhead" and "max-autotune" graph each
# block apart, which crashes when one block's graph feeds the next (pytorch#160281): not offered.
GRAPH_MODES = ("cudagraphs", "cudagraphs-eager")
COMPILE_MODES = ("default", "max-autotune-no-cudagraphs", *GRAPH_MODES)
FITTING_DATA = ("ImageFolderData", "SegmentationFolderData", "ADE20KData")  # data that can fit image_size to its files
PRECISIONS = ("32-true", "32", "bf16-mixed", "bf16-true", "16-mixed", "16-true", "64-true")


def check_choice(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not allowed; expected one of {sorted(allowed)}")


def user_step(key: str, build):
    """Run a build step whose errors come from the user's config, as one ConfigError line naming `key`."""
    try:
        return build()
    except InstantiationException as e:
        raise ConfigError(f"{key}: {e.__cause__ or e}") from e
    except (ValueError, FileNotFoundError, NotADirectoryError, KeyError, TypeError) as e:
        raise ConfigError(f"{key}: {e}") from e


def error_line(error: BaseException) -> str:
    """An error's own message in one line. One raised in a DataLoader worker arrives with the worker's
    traceback in front of it: its message is then the last line."""
    lines = str(error).strip().splitlines() or [""]
    line = lines[-1] if "Original Traceback" in str(error) else lines[0]
    return line.split(f"{type(error).__name__}: ", 1)[-1]


def override_key(override: str) -> str:
    """The key a command-line override sets: `+data.root=x` -> `data.root`, `~callbacks.x` -> `callbacks.x`."""
    return override.lstrip("+~").split("=", 1)[0]


def override_value(override: str) -> str:
    return override.partition("=")[2]


def unknown_option(overrides: list[str], conf_dir: Path = CONF_DIR) -> str | None:
    """One line naming the group and its options when a `group=option` override (a sweep's comma list
    too) names no option of one of our config groups, else None. Other sweep syntax, Hydra's own
    groups and configs from other search paths are left to Hydra."""
    if any(override_key(o) == "hydra.searchpath" for o in overrides):
        return None
    for override in overrides:
        key, value = override_key(override), override_value(override)
        group = conf_dir / key
        if override.startswith(("-", "~")) or "=" not in override or key.startswith("hydra") or not group.is_dir():
            continue
        if any(c in value for c in "()[]{}*"):
            continue
        options = sorted(p.stem for p in group.glob("*.yaml"))
        for choice in value.split(","):
            if choice not in options and choice != "null":
                return f"{key}={choice} is not an option of {key}; expected one of {options}"
    return None


def unknown_key(overrides: list[str], conf_dir: Path = CONF_DIR) -> str | None:
    """One line naming a `group.key=value` override whose key the chosen configs lack: the key it most
    likely meant (a typo), or the presets of its group that have it (data.format on data=shapes). The
    groups chosen on the command line are composed once to know the keys (a sweep's comma list: its
    first option). Added keys (+key), removals (~key), Hydra's own keys and anything the composition
    itself refuses are left to Hydra."""
    plain = [o for o in overrides if "=" in o and not o.startswith(("-", "+", "~")) and not o.startswith("hydra")]
    groups = [o for o in plain if (conf_dir / override_key(o)).is_dir()]
    dotted = [o for o in plain if o not in groups and "/" not in override_key(o)]
    if not dotted:
        return None
    choices = [
        f"{override_key(o)}={override_value(o).split(',')[0]}"
        for o in groups
        if not any(c in override_value(o) for c in "()[]{}*")
    ]
    composed = _compose(choices, conf_dir)
    if composed is None:
        return None
    cfg, chosen = composed
    for override in dotted:
        key = override_key(override)
        parent, name = _deepest(cfg, key.split("."))
        if name is None:
            continue
        where = ".".join(parent)
        node = OmegaConf.select(cfg, where) if where else cfg
        close = difflib.get_close_matches(name, [str(k) for k in node], n=1, cutoff=0.6)
        group = parent[0] if parent else None
        if close:
            return f"{key} is not a key of {where or 'the config'}; did you mean {'.'.join([*parent, close[0]])}?"
        if group and len(parent) == 1 and (conf_dir / group).is_dir():
            having = [
                option
                for option in sorted(f.stem for f in (conf_dir / group).glob("*.yaml"))
                if option != chosen.get(group)
                and (found := _compose([*choices, f"{group}={option}"], conf_dir))
                and _deepest(found[0], key.split("."))[1] is None
            ]
            if having:
                return (
                    f"{key} is not a key of {group}={chosen.get(group)}; the {group} presets that take it: "
                    f"{', '.join(having)} (e.g. {group}={having[0]} {override})"
                )
        return f"{key} is not a key of {where or 'the config'}; its keys: {', '.join(sorted(str(k) for k in node))}"
    return None


def _compose(choices: list[str], conf_dir: Path) -> tuple[DictConfig, dict] | None:
    """The config with these group choices, and the choice of every group; None where Hydra refuses it."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    try:
        with initialize_config_dir(str(conf_dir), version_base="1.3"):
            cfg = compose("config", overrides=choices, return_hydra_config=True)
    except (HydraException, ValueError):
        return None
    chosen = dict(cfg.hydra.runtime.choices)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, chosen


def _deepest(cfg: DictConfig, parts: list[str]) -> tuple[list[str], str | None]:
    """(the path that exists, the first part that does not), or (path, None) where the whole key exists or
    ends below a value that is not a mapping (Hydra's to judge)."""
    node = cfg
    for i, part in enumerate(parts):
        if not isinstance(node, DictConfig):
            return parts[:i], None
        if part not in node.keys():  # `in node` is False for a key whose value is still ??? (required)
            return parts[:i], part
        node = node._get_node(part)
    return parts, None


# Options that need an optional extra: (override, the modules it imports, the install command).
EXTRAS = (("hydra/launcher=ray", ("ray", "hydra_plugins.hydra_ray_launcher"), 'pip install -e ".[ray]"'),)


def missing_extra(overrides: list[str]) -> str | None:
    """One line naming the install command when an override needs an optional extra that is not installed."""
    for option, modules, install in EXTRAS:
        if option in overrides and any(importlib.util.find_spec(m) is None for m in modules):
            return f"{option} needs Ray and Hydra's Ray launcher, which are not installed; {install} installs them"
    return None


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


RULES = (
    ("seed", _int, "an integer"),
    ("data.batch_size", lambda v: _int(v) and v > 0, "a positive integer"),
    ("data.num_workers", lambda v: _int(v) and v >= 0, "an integer >= 0"),
    ("data.image_size", lambda v: v is None or (_int(v) and v >= 8), "an integer >= 8 (image folders: or null)"),
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
    (
        "compile",
        lambda v: isinstance(v, bool) or v in COMPILE_MODES,
        f"true, false or one of {list(COMPILE_MODES)} (cudagraphs: the whole step in one CUDA graph)",
    ),
    (
        "stop_signals",
        lambda v: OmegaConf.is_list(v) and all(s in STOP_SIGNALS for s in v),
        f"a list of signal names among {list(STOP_SIGNALS)}",
    ),
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
    if cfg.data.image_size is None and not str(cfg.data.get("_target_", "")).endswith(FITTING_DATA):
        raise ConfigError(
            f"data.image_size=null fits the size to the images, which only image folders do; "
            f"give data={cfg.data.name} a size, e.g. data.image_size=64"
        )
    check_graph_mode(cfg)
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


def check_graph_mode(cfg: DictConfig) -> None:
    """What one captured step per batch, on one device, cannot do: refused before anything runs."""
    if cfg.compile not in GRAPH_MODES:
        return
    trainer, mode = cfg.trainer, f"compile={cfg.compile}"
    if trainer.get("accumulate_grad_batches", 1) != 1:
        raise ConfigError(
            f"trainer.accumulate_grad_batches={trainer.accumulate_grad_batches} is not supported with {mode} "
            "(one replayed optimizer step per batch); raise data.batch_size, or use compile=true"
        )
    if trainer.get("gradient_clip_algorithm") not in (None, "norm"):
        raise ConfigError(
            f"trainer.gradient_clip_algorithm={trainer.gradient_clip_algorithm} is not supported with {mode}; "
            "it clips the global norm inside the graph (norm)"
        )
    if str(trainer.get("precision")) in ("16-mixed", "16"):
        raise ConfigError(
            f"trainer.precision={trainer.precision} is not supported with {mode}: the loss scaler steps the "
            "optimizer outside the captured step; use trainer.precision=bf16-mixed"
        )
    if cfg.model.get("ffn_recompute"):
        raise ConfigError(
            f"model.ffn_recompute={cfg.model.ffn_recompute} is not supported with {mode}: recomputation reads "
            "the RNG state, which a capture forbids; set it to false, or use compile=true"
        )
    devices = trainer.get("devices", 1)
    if "ddp" in str(trainer.get("strategy", "")) or trainer.get("num_nodes", 1) != 1 or devices not in (1, "1"):
        raise ConfigError(
            f"trainer.devices={devices}, trainer.num_nodes={trainer.get('num_nodes', 1)}: {mode} runs on one "
            "device; use trainer=gpu, or compile=true for several"
        )


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


# Official training checkpoints keep their command line as an argparse.Namespace: data, no code.
ALLOWED_GLOBALS = {"argparse.Namespace"}


def unsafe_globals(path: str | Path) -> list[str]:
    """Names a checkpoint would import when unpickled that `weights_only` loading refuses (bar ALLOWED_GLOBALS).

    Raises ValueError when the file is not a readable PyTorch checkpoint.
    """
    import torch  # here, not at the top: the config rules answer without loading torch

    try:
        found = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception as e:  # a truncated zip, not a checkpoint at all, ...
        raise ValueError(f"{path} is not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from e
    return [name for name in found if name not in ALLOWED_GLOBALS]
