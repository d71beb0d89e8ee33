"""A trained model's predictions on the validation split, and the W&B table and confusion matrix made of them."""

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from ..data.base import displayable

log = logging.getLogger(__name__)

# W&B tables hold 10,000 rows, and a confusion matrix is a row per (true, predicted) pair of classes.
CONFUSION_MATRIX_MAX_CLASSES = 100


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
    return Predictions(
        labels=torch.cat(labels),
        predicted=torch.cat(predicted),
        confidence=torch.cat(confidence),
        groups=torch.cat(groups) if groups else None,
        images=images,
        class_names=list(datamodule.class_names),
        group_names=datamodule.group_names if groups else None,
    )


def predictions_table(predictions: Predictions, count: int):
    """The first `count` validation images with label, prediction and confidence (and group, if any)."""
    import wandb

    names, groups = predictions.class_names, predictions.group_names
    columns = ["image", "label", "prediction", "confidence", "correct"] + (["group"] if groups else [])
    rows = []
    for i in range(min(count, len(predictions.images))):
        label, predicted = int(predictions.labels[i]), int(predictions.predicted[i])
        row = [wandb.Image(predictions.images[i]), names[label], names[predicted]]
        row += [float(predictions.confidence[i]), label == predicted]
        rows.append(row + ([groups[int(predictions.groups[i])]] if groups else []))
    return wandb.Table(columns=columns, data=rows)


def wandb_media(predictions: Predictions, count: int, confusion_matrix: bool) -> dict:
    """{"val/predictions": the first `count` as a table, "val/confusion_matrix": over the whole split}, as asked."""
    import wandb

    media = {"val/predictions": predictions_table(predictions, count)} if count else {}
    classes = len(predictions.class_names)
    if confusion_matrix and classes > CONFUSION_MATRIX_MAX_CLASSES:
        log.info("no confusion matrix: %d classes (at most %d)", classes, CONFUSION_MATRIX_MAX_CLASSES)
    elif confusion_matrix:  # the predictions cover the whole split then (fit.log_fit_end)
        media["val/confusion_matrix"] = wandb.plot.confusion_matrix(
            y_true=predictions.labels.tolist(),
            preds=predictions.predicted.tolist(),
            class_names=predictions.class_names,
            title="validation confusion matrix (best checkpoint)",
        )
    return media
