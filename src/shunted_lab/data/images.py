"""Image files: reading and decoding them, a transform that names the file it fails on, and the input
size that fits them (shared by the readers, the pipelines and the segmentation folders)."""

import io
import logging

from PIL import Image

from ..exits import DataError

log = logging.getLogger(__name__)


def read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise DataError(f"cannot read image {path}: {e}") from e


def load_rgb(file, name: str | None = None) -> Image.Image:
    """An image file (a path, or a file object; `name` says which image in errors) as an RGB image."""
    try:
        with Image.open(file) as image:
            return image.convert("RGB")
    except (OSError, ValueError) as e:
        raise DataError(
            f"cannot read image {name or file}: {e} (set data.skip_bad_images=true to skip such files)"
        ) from e


def decode_rgb(data: bytes, name: str) -> Image.Image:
    """An image file's bytes (read from a tar shard) as an RGB image."""
    return load_rgb(io.BytesIO(data), name)


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


def median_short_side(files) -> int | None:
    """The median short side, in pixels, of the images among `files` (paths or file objects; their
    headers only)."""
    sides = []
    for file in files:
        try:
            with Image.open(file) as image:
                sides.append(min(image.size))
        except (OSError, ValueError):
            continue
    return sorted(sides)[len(sides) // 2] if sides else None


def fitting_image_size(side: int | None) -> int:
    """The input size for images of this median short side: rounded up to a multiple of 32 (the
    backbone's total stride), between 32 and 224 (the published models' size; 224 without a side)."""
    return 224 if side is None else min(224, max(32, -(-side // 32) * 32))


def fit_image_size(side: int | None) -> int:
    """The input size that fits images of this median short side (median_short_side of a sample of
    the training split), logged."""
    size = fitting_image_size(side)
    log.info(
        "data.image_size=%d: the training images are about %s px on their short side (data.image_size=<px> sets it)",
        size,
        side,
    )
    return size
