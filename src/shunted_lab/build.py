"""The network a config describes: model preset, token mixer and FFN (conf/model, attention, mlp)."""

import timm
from omegaconf import DictConfig, OmegaConf
from torch import nn


def build_model(cfg: DictConfig, num_classes: int) -> nn.Module:
    kwargs = OmegaConf.to_container(cfg.model, resolve=True)
    name, checkpoint = kwargs.pop("name"), kwargs.pop("checkpoint", None)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}  # null: the preset's own value
    return timm.create_model(
        name,
        num_classes=num_classes,
        attention=cfg.attention.name,
        attention_kwargs=OmegaConf.to_container(cfg.attention.kwargs),
        mlp=cfg.mlp.name,
        pretrained=checkpoint is not None,
        pretrained_cfg_overlay=dict(file=checkpoint) if checkpoint else None,
        **kwargs,
    )
