"""SHAPES: a procedurally generated, multi-scale image-classification task that needs no download.

Ten shape classes (filled and outlined discs, squares, diamonds, triangles, crosses) are drawn
at sizes spanning 4x (by default 1/8 to 1/2 of the image side: 8 to 32 pixels across on a 64x64
canvas), anywhere on a noisy colour gradient, among line segments and blobs of clutter. Telling
an 8-pixel ring from an 8-pixel disc needs fine detail, a 28-pixel one needs context: several
scales matter in one image.
Every image is a pure function of (seed, split, index), so any run can regenerate the data.
`ShapesData` serves it, with object sizes that train and test may draw from apart (scale shift).
"""

import numpy as np
import torch

from .base import TensorImages
from .generated import GeneratedData, normalized

CLASSES = (
    "disc",
    "ring",
    "square",
    "square_outline",
    "diamond",
    "diamond_outline",
    "plus",
    "cross",
    "triangle_up",
    "triangle_down",
)
SPLIT_OFFSETS = {"train": 0, "val": 1, "test": 2}
SCALES = (1 / 8, 1 / 2)  # object side / image side, drawn uniformly in this range


def shape_mask(label: int, dx: np.ndarray, dy: np.ndarray, s: float) -> np.ndarray:
    ax, ay = np.abs(dx), np.abs(dy)
    box, l1, r = np.maximum(ax, ay), ax + ay, np.hypot(dx, dy)
    bar = s / 3
    return [
        r <= s,
        (r <= s) & (r >= 0.55 * s),
        box <= s,
        (box <= s) & (box >= 0.6 * s),
        l1 <= s,
        (l1 <= s) & (l1 >= 0.5 * s),
        (box <= s) & (np.minimum(ax, ay) <= bar),
        (box <= s) & (np.abs(ax - ay) <= bar),
        (ay <= s) & (ax <= (dy + s) / 2),
        (ay <= s) & (ax <= (s - dy) / 2),
    ][label]


def background(rng: np.random.Generator, size: int, clutter: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A (size, size, 3) float image: a noisy colour gradient with `clutter` line segments and blobs
    that are none of the classes; and the pixel grid (rows, columns) the shapes are drawn on."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    c0, c1 = rng.uniform(0, 130, (2, 3)).astype(np.float32)  # dark background, bright objects
    angle = rng.uniform(0, 2 * np.pi)
    t = ((xx * np.cos(angle) + yy * np.sin(angle)) / (size * 1.42) + 0.5)[..., None]
    img = c0 * (1 - t) + c1 * t + rng.normal(0, 6, (size, size, 3))
    for _ in range(clutter):
        colour = rng.uniform(0, 255, 3)
        if rng.random() < 0.7:
            (x0, y0), (x1, y1) = rng.uniform(0, size, (2, 2))
            length = max(np.hypot(x1 - x0, y1 - y0), 1e-3)
            along = np.clip(((xx - x0) * (x1 - x0) + (yy - y0) * (y1 - y0)) / length**2, 0, 1)
            dist = np.hypot(xx - (x0 + along * (x1 - x0)), yy - (y0 + along * (y1 - y0)))
            img[dist <= rng.uniform(0.3, 0.7)] = colour
        else:
            cx, cy = rng.uniform(0, size, 2)
            img[np.hypot(xx - cx, yy - cy) <= rng.uniform(0.8, 1.5)] = colour
    return img, yy, xx


def render(
    rng: np.random.Generator, label: int, size: int, clutter: int, scales: tuple[float, float] = SCALES
) -> tuple[np.ndarray, tuple]:
    """One (size, size, 3) uint8 image of class `label` whose object's side is a fraction in `scales`
    of the image's, and its object's (centre row, centre column, half size) in pixels."""
    img, yy, xx = background(rng, size, clutter)
    half = rng.uniform(scales[0] / 2, scales[1] / 2) * size
    cx, cy = rng.uniform(half, size - half, 2)
    img[shape_mask(label, xx - cx, yy - cy, half)] = rng.uniform(170, 255, 3)
    return np.clip(img, 0, 255).astype(np.uint8), (cy, cx, half)


def generate(
    num_images: int, seed: int, split: str, size: int = 64, clutter: int = 4, scales: tuple[float, float] = SCALES
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N, 3, size, size) uint8 images, (N,) labels balanced over the classes, and (N, 3) objects:
    each object's centre row, centre column and half size, in pixels."""
    rng = np.random.default_rng([seed, SPLIT_OFFSETS[split]])
    labels = np.arange(num_images) % len(CLASSES)
    rng.shuffle(labels)
    images, objects = zip(*(render(rng, int(label), size, clutter, scales) for label in labels), strict=True)
    images = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return images, torch.from_numpy(labels), torch.tensor(objects, dtype=torch.float32).view(-1, 3)


def flipped_and_normalized(image: torch.Tensor) -> torch.Tensor:
    """The training augmentation: a horizontal flip half the time (torch's generator, which SeededItems
    seeds per item), then `normalized`."""
    return normalized(image.flip(-1) if torch.rand(()) < 0.5 else image)


class ShapesData(GeneratedData):
    """SHAPES (above), generated splits with object sizes that train and test draw apart (generated.py).
    Evaluation images are grouped by their object's size into `scale_bins`."""

    num_classes = len(CLASSES)
    class_names = list(CLASSES)

    def __init__(
        self,
        num_train: int = 10000,
        num_val: int = 2000,
        num_test: int = 2000,
        train_scales: tuple[float, float] = SCALES,
        **kwargs,
    ):
        super().__init__(num_train, num_val, num_test, train_scales, **kwargs)

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        (lo, hi), n = self.scales[name], self.sizes[name]
        # "-objects": caches before the object records held (images, labels) only.
        file = (
            f"shapes-{name}-n{n}-seed{self.seed}-{self.image_size}px-clutter{self.clutter}"
            f"-scales{lo:g}-{hi:g}-objects.pt"
        )
        return self.cached(file, lambda: generate(n, self.seed, name, self.image_size, self.clutter, (lo, hi)))

    def scale_groups(self, objects: torch.Tensor) -> torch.Tensor | None:
        """Each object's size bin, from its side / image side."""
        return self.size_bin(2 * objects[:, 2] / self.image_size) if self.scale_bins else None

    def setup(self, stage: str | None = None) -> None:
        images, labels, objects = self.split("train")
        self.train_set = TensorImages(images, labels, flipped_and_normalized, objects)
        self.val_set, self.test_set = (
            TensorImages(images, labels, normalized, objects, self.scale_groups(objects))
            for images, labels, objects in (self.split("val"), self.split("test"))
        )
