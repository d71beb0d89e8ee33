"""A segmentation model's masks on the first validation images: a W&B table of images with the
predicted and ground-truth masks (`wandb.Image` masks, toggled in the W&B UI), and the same as a
PNG grid in the run directory (image, ground truth, prediction per row)."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..data.base import displayable
from ..files import atomic_write


@dataclass
class MaskPredictions:
    images: list[np.ndarray]  # HWC uint8, stretched for display
    labels: list[np.ndarray]  # HW class indices (ignore_index where unlabelled)
    predicted: list[np.ndarray]  # HW arg-max class
    class_names: list[str]
    ignore_index: int


@torch.no_grad()
def predict_masks(model: nn.Module, datamodule, count: int) -> MaskPredictions:
    """The first `count` validation images, on this process, in order."""
    datamodule.setup("validate")
    dataset = datamodule.val_set
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    images, labels, predicted = [], [], []
    for i in range(min(count, len(dataset))):
        image, label = dataset[i][:2]
        images.append((displayable(image) * 255).round().astype(np.uint8))
        labels.append(label.numpy().astype(np.int64))
        predicted.append(model(image[None].to(device))[0].argmax(0).cpu().numpy().astype(np.int64))
    model.train(was_training)
    return MaskPredictions(images, labels, predicted, list(datamodule.class_names), datamodule.ignore_index)


def mask_table(masks: MaskPredictions, count: int):
    """A wandb.Table of the first `count` images with their prediction and ground-truth masks, and pixel accuracy."""
    import wandb

    names = dict(enumerate(masks.class_names)) | {masks.ignore_index: "ignored"}
    rows = []
    for image, label, predicted in list(zip(masks.images, masks.labels, masks.predicted, strict=True))[:count]:
        labelled = label != masks.ignore_index
        accuracy = float((predicted == label)[labelled].mean()) if labelled.any() else float("nan")
        overlay = wandb.Image(
            image,
            masks={
                "prediction": {"mask_data": predicted, "class_labels": names},
                "ground_truth": {"mask_data": label, "class_labels": names},
            },
        )
        rows.append([overlay, accuracy])
    return wandb.Table(columns=["image", "pixel_acc"], data=rows)


def palette(num_classes: int) -> np.ndarray:
    """A colour per class (class 0 black), fixed: the same class has the same colour in every figure."""
    rng = np.random.default_rng(0)
    colours = rng.integers(40, 256, (num_classes, 3)).astype(np.uint8)
    colours[0] = 0
    return colours


def write_mask_grid(masks: MaskPredictions, count: int, path: Path) -> Path:
    """The first `count` images as rows of image, ground truth and prediction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = palette(len(masks.class_names))

    def coloured(label: np.ndarray) -> np.ndarray:
        out = colours[np.clip(label, 0, len(colours) - 1)]
        out[label == masks.ignore_index] = 255  # unlabelled: white
        return out

    shown = list(zip(masks.images, masks.labels, masks.predicted, strict=True))[:count]
    fig, axes = plt.subplots(len(shown), 3, figsize=(6, 2 * len(shown)), squeeze=False)
    for row, (image, label, predicted) in enumerate(shown):
        pictures = (image, coloured(label), coloured(predicted))
        for ax, picture, title in zip(axes[row], pictures, ("image", "ground truth", "prediction"), strict=True):
            ax.imshow(picture, interpolation="nearest")
            ax.set_axis_off()
            if row == 0:
                ax.set_title(title, fontsize=9)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)
    return path
