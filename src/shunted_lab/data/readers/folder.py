"""The folder reader (data.format=folder): `root/train/<class>/*` and `root/val/<class>/*`, the ImageNet
layout, with an optional groups file naming a group per val image (per-group metrics)."""

import csv
import logging
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets import folder as tv_folder

from ...exits import ConfigError, DataError
from ..images import read_bytes
from .layout import folder_classes

log = logging.getLogger(__name__)


def readable_image(path: str) -> bool:
    if not tv_folder.has_file_allowed_extension(path, tv_folder.IMG_EXTENSIONS):
        return False
    try:
        with Image.open(path) as image:
            image.verify()
        return True
    except (OSError, ValueError):
        log.warning("skipping unreadable image %s", path)
        return False


def read_groups(path: Path) -> dict[str, str]:
    """A groups file: CSV with a header `path,group`, one row per image, paths relative to data.root."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise FileNotFoundError(f"data.groups_file={str(path)!r} cannot be read: {e.strerror}") from e
    if not rows or not {"path", "group"} <= set(rows[0]):
        raise ValueError(f"data.groups_file={str(path)!r} needs a header `path,group` and a row per image")
    return {Path(row["path"]).as_posix(): row["group"] for row in rows}


class FolderImages(Dataset):
    """(path, class index) samples as a pipeline's items (`item.from_file`); with `groups` set, each
    item ends with its group index (per-group metrics)."""

    def __init__(self, samples: list[tuple[str, int]], item, groups: torch.Tensor | None = None):
        self.samples, self.item, self.groups = samples, item, groups

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, label = self.samples[i]
        item = self.item.from_file(path, label)
        return item if self.groups is None else (*item, int(self.groups[i]))

    def read(self, i: int) -> tuple[bytes, int, str]:
        """The sample's file as (bytes, class index, path), as the shard reader reads a sample."""
        path, label = self.samples[i]
        return read_bytes(path), label, path


class FolderReader:
    """A classification dataset stored as an image folder: its classes, its splits as FolderImages of a
    pipeline's items, and a sample of its images for sizing. An unreadable image stops the run naming
    the file; with `skip_bad` every file is verified first (slow on large sets) and the bad ones are
    skipped and counted. With `groups_file` (read_groups) every val image needs a row."""

    shard_lengths = None

    def __init__(self, root: str, skip_bad: bool, num_classes: int | None, groups_file: str | None):
        self.root, self.skip_bad = Path(root), skip_bad
        self.classes = folder_classes(self.root, f"data.root={root!r}")
        if num_classes is not None and num_classes != len(self.classes):
            raise ConfigError(f"data.num_classes={num_classes} but data.root={root!r} has {len(self.classes)}")
        self.groups = read_groups(Path(groups_file)) if groups_file else None
        self.group_names = sorted(set(self.groups.values())) if self.groups else None

    def split(self, split: str, item) -> FolderImages:
        folder = self.root / split
        class_index = {name: i for i, name in enumerate(self.classes)}
        if not self.skip_bad:
            samples = tv_folder.make_dataset(folder, class_index, extensions=tv_folder.IMG_EXTENSIONS)
        else:
            samples = tv_folder.make_dataset(folder, class_index, is_valid_file=readable_image)
            images = tv_folder.IMG_EXTENSIONS
            candidates = sum(tv_folder.has_file_allowed_extension(str(f), images) for f in folder.rglob("*"))
            if candidates > len(samples):
                log.warning("%s: skipped %d unreadable of %d images", folder, candidates - len(samples), candidates)
        groups = self._group_indices(samples) if self.groups and split == "val" else None
        return FolderImages(samples, item, groups)

    def _group_indices(self, samples: list[tuple[str, int]]) -> torch.Tensor:
        paths = [Path(path).relative_to(self.root).as_posix() for path, _ in samples]
        missing = [p for p in paths if p not in self.groups]
        if missing:
            raise DataError(
                f"data.groups_file has no row for {len(missing)} of {len(paths)} val images (e.g. {missing[0]}); "
                "give every image a group"
            )
        index = {name: i for i, name in enumerate(self.group_names)}
        return torch.tensor([index[self.groups[p]] for p in paths])

    def sample_files(self, classes: int = 8, per_class: int = 4) -> list[Path]:
        """The first images of up to 8 classes spread over the training split (a few directory
        listings, not a walk of the whole split)."""
        picked = self.classes[:: max(1, len(self.classes) // classes)][:classes]
        return [p for c in picked for p in sorted((self.root / "train" / c).iterdir())[:per_class] if p.is_file()]

    def report(self) -> None:
        """Nothing to add: the unreadable files were counted when the splits were listed."""
