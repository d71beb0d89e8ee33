"""The network a config describes: model preset, token mixer and FFN (conf/model, attention, mlp),
for the objective's task (conf/objective: a classifier, or the backbone under a segmentation head),
starting from `model.checkpoint` when it names one (fine-tuning: weights.py adapts it; a
segmentation model starts its backbone from it).
The presets are timm entry points (pyramid.py), which importing this package registers."""

import timm
from omegaconf import DictConfig, OmegaConf
from torch import nn

from .segmentation import SegmentationModel
from .weights import load_weights


def describe(cfg: DictConfig) -> str:
    return f"model={cfg.model.name} attention={cfg.attention.name} mlp={cfg.mlp.name}"


def objective_of(cfg: DictConfig) -> DictConfig:
    """The config's objective; configs written before objectives existed trained classifiers."""
    return cfg.get("objective") or OmegaConf.create({"name": "classification"})


def build_model(cfg: DictConfig, num_classes: int) -> nn.Module:
    objective = objective_of(cfg)
    segmentation = objective.name == "segmentation"
    kwargs = OmegaConf.to_container(cfg.model, resolve=True)
    name, checkpoint = kwargs.pop("name"), kwargs.pop("checkpoint", None)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}  # null: the preset's own value
    model = timm.create_model(
        name,
        num_classes=0 if segmentation else num_classes,
        attention=cfg.attention.name,
        attention_kwargs=OmegaConf.to_container(cfg.attention.kwargs),
        mlp=cfg.mlp.name,
        **kwargs,
    )
    if checkpoint is not None:
        load_weights(model, checkpoint, "model.checkpoint", describe(cfg), new_head=True)
    if segmentation:
        model = SegmentationModel(model, num_classes, objective.head.fpn_dim, objective.head.channels)
    return model
