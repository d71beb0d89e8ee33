"""Weights from a file into a model built to take them: this project's Lightning checkpoints and the
official release files, adapted to the model's resolution and class count where that is well defined.

- Official keys (patch_embedN / blockN.i / normN) are mapped as the timm entry point maps them.
- A weight that depends on the resolution is the mixer's to adapt, in its own `_load_from_state_dict`
  (swin resamples its relative-position bias tables to its window). No other weight depends on it:
  the stems and the pvt/shunted aggregations are convolutions, and no mixer has an absolute position
  embedding. Shunted's rates apply to any map with the official floor rounding (mixers/shunted.py).
- The classifier is kept when the class counts agree. Otherwise evaluation refuses the file, and
  fine-tuning (`new_head=True`) leaves the model's freshly initialised head in place. A backbone
  without a classifier (under a segmentation head) takes everything but the classifier.
Anything else that differs (another mixer, FFN, depth, width) is refused with the keys that differ.
"""

import logging
from pathlib import Path

import torch
from torch import nn

from ..config import check_checkpoint_file
from ..exits import ConfigError
from .pyramid import checkpoint_filter_fn

log = logging.getLogger(__name__)

HEAD = ("head.weight", "head.bias")


def read_state(path: str | Path, key: str) -> tuple[dict, bool]:
    """The file's model weights and whether it is a Lightning checkpoint of this project (else an
    official release file: bare, or a training checkpoint holding them under "model")."""
    check_checkpoint_file(key, path)
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(ckpt, dict) and "pytorch-lightning_version" in ckpt:
        return {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}, True
    state = ckpt.get("model", ckpt.get("state_dict", ckpt)) if isinstance(ckpt, dict) else {}
    return state, False


def state_mismatch(expected: dict, found: dict, shapes: bool = True) -> str:
    """'' when the keys (and with `shapes`, their shapes) agree, else what differs, with examples."""
    parts = []
    for what, keys in (
        ("missing", [k for k in expected if k not in found]),
        ("unexpected", [k for k in found if k not in expected]),
        ("of another shape", [k for k in expected if shapes and k in found and expected[k].shape != found[k].shape]),
    ):
        if keys:
            parts.append(f"{len(keys)} keys {what} (e.g. {', '.join(keys[:2])})")
    return "; ".join(parts)


def load_weights(model: nn.Module, path: str | Path, key: str, describe: str, new_head: bool = False) -> None:
    """Load `path` into `model` (built as `describe` says), or ConfigError naming `key` and what differs."""
    state, lightning = read_state(path, key)
    where = f"{key}={str(path)!r}"
    expected = model.state_dict()
    if HEAD[0] not in expected:  # a backbone without its classifier
        state = {k: v for k, v in state.items() if k not in HEAD}
    head = state.get("head.weight")
    new_classes = head is not None and head.shape[0] != expected["head.weight"].shape[0]
    if new_classes and not new_head:
        raise ConfigError(
            f"{where} has a {head.shape[0]}-class head but the data has {expected['head.weight'].shape[0]} "
            "classes; evaluate it on the data it was trained for (data=...)"
        )
    if not lightning:
        try:  # release keys -> this model's, as the timm entry point maps them
            state = checkpoint_filter_fn(state, model)
        except KeyError as e:
            raise ConfigError(f"{where} does not fit {describe} ({e.args[0][:300]})") from e
    if new_classes:
        log.info("%s: %d classes, the data %d: the head starts fresh", where, head.shape[0], len(expected["head.bias"]))
        state = {k: v for k, v in state.items() if k not in HEAD} | {k: expected[k] for k in HEAD}
    advice = "name the variant it was trained as"
    mismatch = state_mismatch(expected, state, shapes=False)
    if mismatch:
        raise ConfigError(f"{where} does not fit {describe}: {mismatch}; {advice}")
    try:  # a mixer adapts what depends on the resolution in its load hook; any other shape is refused
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ConfigError(f"{where} does not fit {describe}: {state_mismatch(expected, state)}; {advice}") from e
