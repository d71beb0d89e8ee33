"""A trained model's predictions on the whole validation split, for the loggers' table and confusion matrix."""

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from .analysis.figures import displayable


@dataclass
class Predictions:
    labels: torch.Tensor  # (N,)
    predicted: torch.Tensor  # (N,) arg-max class
    confidence: torch.Tensor  # (N,) its softmax probability
    groups: torch.Tensor | None  # (N,) group index (SHAPES: object size), where the data has groups
    images: list[np.ndarray]  # the first images, HWC uint8, stretched for display
    class_names: list[str]
    group_names: list[str] | None


@torch.no_grad()
def predict_split(model: nn.Module, datamodule, batch_size: int, keep_images: int) -> Predictions:
    """Every image of the validation split once, on this process (not sharded), in order."""
    datamodule.setup("validate")
    dataset = datamodule.val_set
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    labels, predicted, confidence, groups, images = [], [], [], [], []
    for batch in DataLoader(dataset, batch_size=batch_size, num_workers=datamodule.num_workers):
        x, y = batch[0], batch[1]
        probs = model(x.to(device)).float().softmax(-1).cpu()
        top, arg = probs.max(-1)
        labels.append(y)
        predicted.append(arg)
        confidence.append(top)
        if len(batch) > 2:
            groups.append(batch[2])
        for image in x[: keep_images - len(images)]:
            images.append((displayable(image) * 255).round().astype(np.uint8))
    model.train(was_training)
    names = getattr(datamodule, "class_names", None) or getattr(dataset, "classes", None)
    return Predictions(
        labels=torch.cat(labels),
        predicted=torch.cat(predicted),
        confidence=torch.cat(confidence),
        groups=torch.cat(groups) if groups else None,
        images=images,
        class_names=list(names) if names else [str(i) for i in range(datamodule.num_classes)],
        group_names=datamodule.group_names if groups else None,
    )
