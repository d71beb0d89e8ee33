"""Image files on disk: reading them, and the input size that fits them (shared by the folder datasets)."""

import logging

from PIL import Image

from ..exits import DataError

log = logging.getLogger(__name__)


def load_rgb(path: str) -> Image.Image:
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read image {path}: {e} (set data.skip_bad_images=true to skip such files)") from e


def transformed(transform, image: Image.Image, path: str):
    """`transform(image)`, step by step where it is a Compose, so that a step that raises is a
    DataError naming the file and the step (run.py: one line, exit 4), not a loader worker's traceback."""
    steps = [] if transform is None else getattr(transform, "transforms", [transform])
    for step in steps:
        try:
            image = step(image)
        except Exception as e:
            raise DataError(f"the transform {type(step).__name__} failed on {path}: {type(e).__name__}: {e}") from e
    return image


def median_short_side(paths) -> int | None:
    """The median short side, in pixels, of the images among `paths` (their headers only)."""
    sides = []
    for path in paths:
        try:
            with Image.open(path) as image:
                sides.append(min(image.size))
        except (OSError, ValueError):
            continue
    return sorted(sides)[len(sides) // 2] if sides else None


def fitting_image_size(side: int | None) -> int:
    """The input size for images of this median short side: rounded up to a multiple of 32 (the
    backbone's total stride), between 32 and 224 (the published models' size; 224 without a side)."""
    return 224 if side is None else min(224, max(32, -(-side // 32) * 32))


def fit_image_size(paths) -> int:
    """The input size that fits the images among `paths` (a sample of the training split), logged."""
    side = median_short_side(paths)
    size = fitting_image_size(side)
    log.info(
        "data.image_size=%d: the training images are about %s px on their short side (data.image_size=<px> sets it)",
        size,
        side,
    )
    return size
