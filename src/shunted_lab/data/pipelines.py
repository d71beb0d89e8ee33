"""Where the training images are decoded and augmented (data.pipeline): `workers`, timm's transform in
the loader workers, or `device`, the same draws applied to the whole batch on the training device
(device/; docs/data.md). Evaluation images are always prepared in the workers (DecodedItem).

A pipeline gives the reader its training `item` (called on an image's bytes, or `from_file` on a
path), the loader its `collate`, and the datamodule's transfer hook its `transfer`.
"""

from ..exits import ConfigError
from .device.augment import DeviceAugment, log_counts
from .device.draws import AugmentPlan
from .device.encoded import EncodedBatch, EncodedItem, collate_encoded
from .images import decode_rgb, load_rgb, transformed

PIPELINES = ("workers", "device")  # data.pipeline


class DecodedItem:
    """An image decoded, then `transform`ed: the workers pipeline's item, and every evaluation item."""

    def __init__(self, transform):
        self.transform = transform

    def __call__(self, data: bytes, label: int, name: str):
        return transformed(self.transform, decode_rgb(data, name), name), label

    def from_file(self, path: str, label: int):
        return transformed(self.transform, load_rgb(path), path), label


class WorkersPipeline:
    """timm's training transform in the loader workers."""

    collate = None  # PyTorch's default: the items are tensors of one shape

    def __init__(self, transform):
        self.item = DecodedItem(transform)

    def transfer(self, batch, device, move):
        return move(batch)

    def report(self) -> None:
        """Nothing to count: a bad image stopped the run or was skipped by the reader."""


class DevicePipeline:
    """The workers read the bytes and draw; the training device decodes and augments the batch."""

    def __init__(self, transform, skip_bad_images: bool):
        self.augment = DeviceAugment(AugmentPlan.of(transform), skip_bad_images)
        self.item, self.collate = EncodedItem(self.augment.plan), collate_encoded

    def transfer(self, batch, device, move):
        """The training batches (EncodedBatch: one of collate's) are decoded and augmented on `device`;
        the evaluation batches are moved."""
        return self.augment(batch, device) if isinstance(batch, EncodedBatch) else move(batch)

    def report(self) -> None:
        log_counts(self.augment)


def create_pipeline(pipeline: str, transform, skip_bad_images: bool):
    if pipeline == "workers":
        return WorkersPipeline(transform)
    if pipeline == "device":
        return DevicePipeline(transform, skip_bad_images)
    raise ConfigError(f"data.pipeline={pipeline} is not allowed; expected one of {list(PIPELINES)}")
