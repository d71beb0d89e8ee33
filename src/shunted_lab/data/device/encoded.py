"""Training items as the loader workers send them for data.pipeline=device: the file's bytes and the
item's drawn augmentation (draws.py), batched for augment.py.

A worker reads the bytes, the image's size from its header, and draws; it decodes nothing, except
an image the device's JPEG decoder cannot take (not an RGB JPEG: PNG, CMYK, greyscale), which it
decodes with PIL as the `workers` pipeline does. A batch's bytes travel as one flat tensor (one
shared-memory block per batch, not one per image), and each op layer's sort order and counts are
computed here, in the worker, so that the device side never waits on the host.
"""

import io
from dataclasses import dataclass, field

import torch
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor

from ...exits import DataError
from ..images import decode_rgb, read_bytes
from .draws import OP_KINDS, AugmentPlan, draw


class EncodedItem:
    """The `device` pipeline's item from an image's bytes: (bytes or worker-decoded pixels, label,
    name, drawn parameters); `name` (the file, or the shard and key) says which image, in errors."""

    def __init__(self, plan: AugmentPlan):
        self.plan = plan

    def __call__(self, data: bytes, label: int, name: str):
        try:
            with Image.open(io.BytesIO(data)) as image:
                kind, mode, (width, height) = image.format, image.mode, image.size
        except (OSError, ValueError) as e:
            raise DataError(f"cannot read image {name}: {e} (set data.skip_bad_images=true to skip such files)") from e
        if kind == "JPEG" and mode == "RGB":
            pixels = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        else:
            pixels = pil_to_tensor(decode_rgb(data, name))
        return pixels, label, name, draw(self.plan, width, height)

    def from_file(self, path: str, label: int):
        return self(read_bytes(path), label, path)


@dataclass
class EncodedBatch:
    """A training batch before decoding: JPEG bytes back to back in `encoded` (`lengths` each), the
    workers' pixels of the other images by batch position, labels, paths (for errors), the drawn
    parameters stacked, and per op layer how many samples take each op (the sort order is in
    params["op_order"])."""

    encoded: torch.Tensor
    lengths: list[int]
    pixels: dict[int, torch.Tensor]
    labels: torch.Tensor
    paths: list[str]
    params: dict[str, torch.Tensor]
    op_counts: list[list[int]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def data(self) -> list[torch.Tensor]:
        """Each image's bytes (1-D) or the workers' pixels (3-D), in batch order."""
        out, start = [], 0
        for i, length in enumerate(self.lengths):
            out.append(self.pixels[i] if i in self.pixels else self.encoded[start : start + length])
            start += length
        return out

    def pin_memory(self) -> "EncodedBatch":
        """The DataLoader's pin thread: the numbers then go to the device asynchronously (the bytes are
        decoded from host memory)."""
        self.params = {k: v.pin_memory() for k, v in self.params.items()}
        self.labels = self.labels.pin_memory()
        return self


def collate_encoded(items: list) -> EncodedBatch:
    lengths = [len(data) if data.dim() == 1 else 0 for data, *_ in items]
    encoded = [data for data, *_ in items if data.dim() == 1]
    drawn = [p for *_, p in items]
    params = {
        "crop": torch.tensor([p["crop"] for p in drawn]),
        "flip": torch.tensor([p["flip"] for p in drawn]),
        "op_arg": torch.tensor([p["op_arg"] for p in drawn], dtype=torch.float64).view(len(drawn), -1),
        "erased": torch.tensor([p["erased"] for p in drawn], dtype=torch.int64).view(len(drawn), -1, 4),
    }
    op_index = torch.tensor([p["op_index"] for p in drawn], dtype=torch.int64).view(len(drawn), -1)
    # Each layer sorted by op, those without an op last; stable, so the order is the workers' alone.
    key = torch.where(op_index < 0, len(OP_KINDS), op_index)
    params["op_order"] = torch.sort(key, dim=0, stable=True).indices
    counts = [torch.bincount(key[:, layer], minlength=len(OP_KINDS) + 1)[:-1].tolist() for layer in range(key.shape[1])]
    return EncodedBatch(
        encoded=torch.cat(encoded) if encoded else torch.empty(0, dtype=torch.uint8),
        lengths=lengths,
        pixels={i: data for i, (data, *_) in enumerate(items) if data.dim() == 3},
        labels=torch.tensor([label for _, label, *_ in items]),
        paths=[path for _, _, path, _ in items],
        params=params,
        op_counts=counts,
    )
