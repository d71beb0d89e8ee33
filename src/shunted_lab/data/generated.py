"""What the generated datasets (SHAPES, SHAPES scenes) share: splits that are pure functions of (seed,
split, index), cached on disk; object sizes that train and test draw from set apart for scale-shift
studies (val draws from `train_scales`: model selection never sees the test sizes; test from
`test_scales`); the object-size bins of the evaluation (`scale_bins`); and their normalization."""

from collections.abc import Callable
from pathlib import Path

import torch

from ..files import atomic_write
from .base import ImageData


def normalized(image: torch.Tensor) -> torch.Tensor:
    """A uint8 image as floats of mean 0.5 and std 0.25 per channel: (x / 255 - 0.5) / 0.25. Written
    out because torchvision's v2 Compose costs ~4x as much per item, a few % of a default run's step."""
    return image.float().mul_(4 / 255).sub_(2.0)


def check_range(key: str, value) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):  # not two numbers
        lo = hi = -1.0
    if not 0 < lo <= hi <= 1:
        raise ValueError(f"{key}={value!r} is not allowed; expected [lo, hi] with 0 < lo <= hi <= 1")
    return lo, hi


def check_bins(key: str, bins: dict) -> dict[str, float]:
    bounds = list(bins.values())
    if not bounds or any(not isinstance(b, int | float) for b in bounds) or bounds != sorted(set(bounds)):
        raise ValueError(f"{key}={dict(bins)} is not allowed; expected {{name: upper bound}} with rising bounds")
    if bounds[-1] < 1:
        raise ValueError(f"{key}: the last bound is {bounds[-1]}; it must be 1.0, so that every object falls in a bin")
    return {str(name): float(bound) for name, bound in bins.items()}


class GeneratedData(ImageData):
    def __init__(
        self,
        num_train: int,
        num_val: int,
        num_test: int,
        train_scales: tuple[float, float],
        test_scales: tuple[float, float] | None = None,
        scale_bins: dict[str, float] | None = None,
        clutter: int = 4,
        seed: int = 0,
        root: str | None = None,
        image_size: int = 64,
        **kwargs,
    ):
        super().__init__(image_size=image_size, **kwargs)
        self.sizes = {"train": num_train, "val": num_val, "test": num_test}
        self.clutter, self.seed = clutter, seed
        self.cache_dir = Path(root) if root else None
        train_scales = check_range("data.train_scales", train_scales)
        test_scales = check_range("data.test_scales", test_scales) if test_scales is not None else train_scales
        self.scales = {"train": train_scales, "val": train_scales, "test": test_scales}
        self.scale_bins = scale_bins and check_bins("data.scale_bins", scale_bins)
        self.group_names = list(self.scale_bins) if self.scale_bins else None

    def cached(self, file_name: str, make: Callable[[], tuple]) -> tuple:
        """`make()`'s split, read from the cache folder (data.root) when a run already wrote it there."""
        if self.cache_dir is None:
            return make()
        path = self.cache_dir / file_name
        if path.is_file():
            return torch.load(path, weights_only=True)
        data = make()
        atomic_write(path, lambda f: torch.save(data, f))  # concurrent sweep jobs never read half a cache
        return data

    def size_bin(self, fraction: torch.Tensor) -> torch.Tensor:
        """The bin of each object side / image side: the first whose bound is above it (the last holds 1.0)."""
        bounds = torch.tensor(list(self.scale_bins.values())[:-1], dtype=fraction.dtype)
        return torch.bucketize(fraction, bounds, right=True)
