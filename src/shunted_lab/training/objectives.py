"""The objectives a run can train for (conf/objective): the LightningModule of each, the metric its
checkpoints and sweeps rank by, and the check that the data serves it."""

from ..data import ImageData
from ..exits import ConfigError
from .classifier import ImageClassifier
from .recipe import RecipeModule
from .segmenter import SemanticSegmenter

DATA_OPTIONS = {
    "classification": "shapes, cifar10, cifar100, imagefolder, imagefolder_small, imagenet",
    "segmentation": "shapes_scenes, ade20k, segfolder",
}


def check_data(objective: str, data_name: str, datamodule: ImageData) -> None:
    if datamodule.objective != objective:
        raise ConfigError(
            f"data={data_name} is {datamodule.objective} data but objective={objective}; "
            f"use one of data={{{DATA_OPTIONS[objective]}}}, or objective={datamodule.objective}"
        )


def build_module(objective: str, model, datamodule: ImageData, optim: dict, **speed) -> RecipeModule:
    """The objective's LightningModule on `model`, with the recipe `optim` and the speed switches
    (channels_last, compile; in the graph modes max_grad_norm, which they clip inside the graph)."""
    if objective == "segmentation":
        return SemanticSegmenter(
            model,
            datamodule.class_names,
            datamodule.ignore_index,
            group_names=datamodule.group_names,
            **optim,
            **speed,
        )
    return ImageClassifier(model, datamodule.num_classes, group_names=datamodule.group_names, **optim, **speed)
