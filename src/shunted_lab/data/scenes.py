"""SHAPES scenes: the embedded semantic-segmentation task, several SHAPES objects per image.

Each image holds 2 to 6 objects of the ten SHAPES classes on the same cluttered backgrounds as
SHAPES (shapes.py). Object sides are drawn log-uniformly, by default from 1/16 to 1/2 of the image
side (4 to 32 pixels on a 64x64 canvas), so the three octave bins of `scale_bins` (small, medium,
large) hold about a third of the objects each. An object is placed where it overlaps none before
it when one of a few tries finds such a place; else it occludes them, and every pixel belongs to
the object drawn last over it. Each image comes with
- a label map: 0 for the background, 1 + the SHAPES class for an object's pixels;
- a size map: the side, in pixels, of the object a pixel belongs to (0 on the background): the
  size bins of the evaluation (IoU per object size) come from it.
Every image is a pure function of (seed, split, index), like SHAPES.
"""

import math

import numpy as np
import torch
from torch.utils.data import Dataset

from .generated import GeneratedData, normalized
from .shapes import CLASSES, SPLIT_OFFSETS, background, shape_mask

SCENE_CLASSES = ("background", *CLASSES)
SCENE_SCALES = (1 / 16, 1 / 2)
PLACEMENT_TRIES = 8


def render_scene(
    rng: np.random.Generator,
    size: int,
    clutter: int,
    scales: tuple[float, float] = SCENE_SCALES,
    objects: tuple[int, int] = (2, 6),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One scene: a (size, size, 3) uint8 image, its (size, size) uint8 label map and float32 size map."""
    img, yy, xx = background(rng, size, clutter)
    labels = np.zeros((size, size), np.uint8)
    sides = np.zeros((size, size), np.float32)
    boxes: list[tuple[float, float, float]] = []
    for _ in range(rng.integers(objects[0], objects[1] + 1)):
        label = int(rng.integers(len(CLASSES)))
        side = math.exp(rng.uniform(math.log(scales[0]), math.log(scales[1]))) * size
        half = side / 2
        for _ in range(PLACEMENT_TRIES):
            cx, cy = rng.uniform(half, size - half, 2)
            if all(max(abs(cx - x), abs(cy - y)) > half + h + 1 for x, y, h in boxes):
                break
        boxes.append((cx, cy, half))
        rows = slice(max(0, math.floor(cy - half)), min(size, math.ceil(cy + half) + 1))
        cols = slice(max(0, math.floor(cx - half)), min(size, math.ceil(cx + half) + 1))
        mask = shape_mask(label, xx[rows, cols] - cx, yy[rows, cols] - cy, half)
        img[rows, cols][mask] = rng.uniform(170, 255, 3)
        labels[rows, cols][mask] = label + 1
        sides[rows, cols][mask] = side
    return np.clip(img, 0, 255).astype(np.uint8), labels, sides


def generate_scenes(
    num_images: int,
    seed: int,
    split: str,
    size: int = 64,
    clutter: int = 4,
    scales: tuple[float, float] = SCENE_SCALES,
    objects: tuple[int, int] = (2, 6),
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N, 3, size, size) uint8 images, (N, size, size) uint8 label maps, (N, size, size) float32 size maps."""
    # A stream of its own, apart from SHAPES' (seed, split): the scenes are not SHAPES' first images.
    rng = np.random.default_rng([seed, SPLIT_OFFSETS[split], 1])
    scenes = [render_scene(rng, size, clutter, scales, objects) for _ in range(num_images)]
    images, labels, sides = zip(*scenes, strict=True)
    images = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return images, torch.from_numpy(np.stack(labels)), torch.from_numpy(np.stack(sides))


class TensorScenes(Dataset):
    """Scenes in memory: (image, label map) items, each normalized (`transform`) and, for training,
    flipped with its map; with `bins` (N, H, W) the items end with the size-bin map (-1 off any object)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform, flip: bool, bins=None):
        self.images, self.labels, self.transform, self.flip, self.bins = images, labels, transform, flip, bins

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        image, label = self.images[i], self.labels[i].long()
        if self.flip and torch.rand(()) < 0.5:  # torch's generator: SeededItems seeds it per item
            image, label = image.flip(-1), label.flip(-1)
        item = self.transform(image), label
        return item if self.bins is None else (*item, self.bins[i].long())


class ShapesScenesData(GeneratedData):
    """SHAPES scenes (above) for semantic segmentation: generated splits with object sizes that train
    and test draw apart (generated.py); evaluation pixels are grouped by their object's size into
    `scale_bins` (object side / image side)."""

    objective = "segmentation"
    num_classes = len(SCENE_CLASSES)
    class_names = list(SCENE_CLASSES)
    ignore_index = 255

    def __init__(
        self,
        num_train: int = 4000,
        num_val: int = 500,
        num_test: int = 500,
        train_scales: tuple[float, float] = SCENE_SCALES,
        objects: tuple[int, int] = (2, 6),
        **kwargs,
    ):
        super().__init__(num_train, num_val, num_test, train_scales, **kwargs)
        lo, hi = (int(n) for n in objects)
        if not 1 <= lo <= hi:
            raise ValueError(f"data.objects={list(objects)} is not allowed; expected [lo, hi] with 1 <= lo <= hi")
        self.objects = (lo, hi)

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        (lo, hi), n = self.scales[name], self.sizes[name]
        file = (
            f"scenes-{name}-n{n}-seed{self.seed}-{self.image_size}px-clutter{self.clutter}"
            f"-objects{self.objects[0]}-{self.objects[1]}-scales{lo:g}-{hi:g}.pt"
        )
        args = (n, self.seed, name, self.image_size, self.clutter, (lo, hi), self.objects)
        return self.cached(file, lambda: generate_scenes(*args))

    def size_bins(self, sides: torch.Tensor) -> torch.Tensor | None:
        """Each pixel's size bin, from its object's side / image side; -1 off any object."""
        if not self.scale_bins:
            return None
        return torch.where(sides > 0, self.size_bin(sides / self.image_size), -1).to(torch.int8)

    def setup(self, stage: str | None = None) -> None:
        images, labels, _ = self.split("train")
        self.train_set = TensorScenes(images, labels, normalized, flip=True)
        self.val_set, self.test_set = (
            TensorScenes(images, labels, normalized, flip=False, bins=self.size_bins(sides))
            for images, labels, sides in (self.split("val"), self.split("test"))
        )
