"""The network a config describes: model preset, token mixer and FFN (conf/model, attention, mlp),
starting from `model.checkpoint` when it names one (fine-tuning: weights.py adapts it).
The presets are timm entry points (pyramid.py), which importing this package registers."""

import timm
from omegaconf import DictConfig, OmegaConf
from torch import nn

from .weights import load_weights


def describe(cfg: DictConfig) -> str:
    return f"model={cfg.model.name} attention={cfg.attention.name} mlp={cfg.mlp.name}"


def build_model(cfg: DictConfig, num_classes: int) -> nn.Module:
    kwargs = OmegaConf.to_container(cfg.model, resolve=True)
    name, checkpoint = kwargs.pop("name"), kwargs.pop("checkpoint", None)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}  # null: the preset's own value
    model = timm.create_model(
        name,
        num_classes=num_classes,
        attention=cfg.attention.name,
        attention_kwargs=OmegaConf.to_container(cfg.attention.kwargs),
        mlp=cfg.mlp.name,
        **kwargs,
    )
    if checkpoint is not None:
        load_weights(model, checkpoint, "model.checkpoint", describe(cfg), new_head=True)
    return model
