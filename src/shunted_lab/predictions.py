"""A trained model's predictions on the validation split, for the loggers' table and confusion matrix."""

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
def predict_split(model: nn.Module, datamodule, batch_size: int, keep_images: int, whole: bool = True) -> Predictions:
    """The validation split's images in order, on this process (not sharded): all of them, or with
    whole=False only the first `keep_images`, which are also kept for display."""
    datamodule.setup("validate")
    dataset = datamodule.val_set
    home = next(model.parameters()).device
    # ddp_spawn hands the trained model back to the launching process on the CPU.
    device = torch.device("cuda") if home.type == "cpu" and torch.cuda.is_available() else home
    was_training = model.training
    model.eval().to(device)
    labels, predicted, confidence, groups, images = [], [], [], [], []
    for batch in DataLoader(dataset, batch_size=batch_size, num_workers=datamodule.num_workers):
        if not whole and len(images) >= keep_images:
            break
        x, y = batch[0], batch[1]
        top, arg = model(x.to(device)).float().softmax(-1).max(-1)
        labels.append(y)
        predicted.append(arg.cpu())
        confidence.append(top.cpu())
        if len(batch) > 2:
            groups.append(batch[2])
        for image in x[: keep_images - len(images)]:
            images.append((displayable(image) * 255).round().astype(np.uint8))
    model.train(was_training).to(home)
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
