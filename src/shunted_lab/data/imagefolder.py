"""Image folders in the ImageNet layout (train/<class>/*, val/<class>/*), or the same images as tar
shards (data.format=shards: data/shards.py), with timm's transforms."""

import csv
import functools
import io
import logging
from pathlib import Path

import torch
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, create_transform
from torchvision import datasets

from ..exits import ConfigError, DataError
from .augment import keep_timm_posterize
from .augment_draws import AugmentPlan
from .base import ImageData
from .device_augment import DeviceAugment, log_counts
from .encoded import EncodedBatch, EncodedImages, EncodedItem, collate_encoded
from .image_files import DecodedItem, fit_image_size, fitting_image_size, load_rgb, median_short_side, transformed
from .shards import TarShards, read_classes, read_info, shard_set

log = logging.getLogger(__name__)

PIPELINES = ("workers", "device")  # data.pipeline: where the training images are decoded and augmented
FORMATS = ("folder", "shards")  # data.format: how the images are stored


def readable_image(path: str) -> bool:
    if not datasets.folder.has_file_allowed_extension(path, datasets.folder.IMG_EXTENSIONS):
        return False
    try:
        with Image.open(path) as image:
            image.verify()
        return True
    except (OSError, ValueError):
        log.warning("skipping unreadable image %s", path)
        return False


class GroupedImageFolder(datasets.ImageFolder):
    """An ImageFolder whose items end with a group index once `groups` is set (per-group metrics).
    A transform that raises on an image is a DataError naming the file and the transform."""

    groups: torch.Tensor | None = None

    def __getitem__(self, i: int):
        path, label = self.samples[i]
        item = transformed(self.transform, self.loader(path), path), label
        return item if self.groups is None else (*item, int(self.groups[i]))


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


class ImageFolderData(ImageData):
    """`root/train/<class>/*` and `root/val/<class>/*` (ImageNet layout); val doubles as the test split.

    Transforms come from timm's `create_transform`, so the official ImageNet recipe is a config:
    RandAugment, random erasing, bicubic resize, crop_pct for evaluation. An unreadable image stops
    the run naming the file; with `skip_bad_images` every file is verified first (slow on large
    sets) and the bad ones are skipped and counted. With `groups_file` (read_groups) the evaluation
    also reports top-1 per group; every val image needs a row. Without `image_size` the input size
    fits the images (`fitting_image_size` of a sample's median short side). With `pipeline="device"`
    the training images are decoded and augmented on the training device, with the same draws and
    PIL's arithmetic (encoded.py, device_augment.py; docs/data.md); evaluation stays in the workers.

    With `format="shards"`, `root` is a folder or URL of WebDataset tar shards (data/shards.py:
    `_info.json` lists them, or `train_shards`/`val_shards` brace patterns name them); remote
    shards are downloaded into `shard_cache`; the training order shuffles the shards, then the
    samples of each run of `shuffle_shards` shards; `skip_bad_images` skips a bad sample when it is
    met, and counts it. `num_classes`, where set, is checked against the data (and names the
    classes of shards that come without a classes.txt).
    """

    def __init__(
        self,
        root: str,
        mean: tuple = IMAGENET_DEFAULT_MEAN,
        std: tuple = IMAGENET_DEFAULT_STD,
        auto_augment: str | None = None,
        re_prob: float = 0.0,
        interpolation: str = "bilinear",
        crop_pct: float = 0.875,
        scale: tuple[float, float] = (0.08, 1.0),
        hflip: float = 0.5,
        skip_bad_images: bool = False,
        groups_file: str | None = None,
        image_size: int | None = None,
        pipeline: str = "workers",
        format: str = "folder",
        num_classes: int | None = None,
        train_shards: str | list[str] | None = None,
        val_shards: str | list[str] | None = None,
        shuffle_shards: int = 8,
        shard_cache: str = "shard_cache",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if format not in FORMATS:
            raise ConfigError(f"data.format={format} is not allowed; expected one of {list(FORMATS)}")
        if pipeline not in PIPELINES:
            raise ConfigError(f"data.pipeline={pipeline} is not allowed; expected one of {list(PIPELINES)}")
        self.format = format
        self.root = Path(root) if format == "folder" else root  # shards may be at a URL
        self.skip_bad_images = skip_bad_images
        if groups_file and format == "shards":
            raise ConfigError("data.groups_file needs data.format=folder (its rows are paths of files)")
        self.groups = read_groups(Path(groups_file)) if groups_file else None
        self.group_names = sorted(set(self.groups.values())) if self.groups else None
        if format == "shards":
            self.shard_cache, self.shard_window = Path(shard_cache), shuffle_shards
            info = read_info(root, self.shard_cache)
            self.shards = {
                split: shard_set(root, info, split, pattern, self.shard_cache)
                for split, pattern in (("train", train_shards), ("val", val_shards))
            }
            self.shard_lengths = self.shards["train"].lengths
            self.classes = read_classes(root, info, num_classes, self.shard_cache)
        else:
            self.classes = self._folder_classes()
            if num_classes is not None and num_classes != len(self.classes):
                raise ConfigError(f"data.num_classes={num_classes} but data.root={root!r} has {len(self.classes)}")
        self.num_classes = len(self.classes)
        self.image_size = image_size or fit_image_size(self.sample_short_side)
        keep_timm_posterize()
        common = dict(input_size=self.image_size, mean=tuple(mean), std=tuple(std), interpolation=interpolation)
        self.train_tf = create_transform(
            is_training=True, auto_augment=auto_augment, re_prob=re_prob, scale=tuple(scale), hflip=hflip, **common
        )
        self.eval_tf = create_transform(is_training=False, crop_pct=crop_pct, **common)
        self.device_augment = (
            DeviceAugment(AugmentPlan.of(self.train_tf), skip_bad_images) if pipeline == "device" else None
        )

    @property
    def class_names(self) -> list[str]:
        return self.classes

    def _folder_classes(self) -> list[str]:
        classes = {split: self._classes(split) for split in ("train", "val")}
        if classes["train"] != classes["val"]:
            raise ValueError(
                f"data.root={str(self.root)!r}: train/ and val/ hold different classes "
                f"(only in train: {sorted(set(classes['train']) - set(classes['val']))[:5]}, "
                f"only in val: {sorted(set(classes['val']) - set(classes['train']))[:5]})"
            )
        return classes["train"]

    def _classes(self, split: str) -> list[str]:
        folder = self.root / split
        if not folder.is_dir():
            raise FileNotFoundError(
                f"data.root={str(self.root)!r} has no {split}/ folder; "
                f"expected {split}/<class>/<image> (ImageNet layout)"
            )
        classes = sorted(d.name for d in folder.iterdir() if d.is_dir())
        empty = [c for c in classes if not any(f.is_file() for f in (folder / c).iterdir())]
        if not classes or empty:
            raise FileNotFoundError(
                f"data.root={str(self.root)!r}: {split}/ has "
                + (f"empty class folders {empty[:5]}" if classes else "no class folders")
                + "; every class needs at least one image"
            )
        return classes

    @functools.cached_property
    def sample_short_side(self) -> int | None:
        """The median short side of some training images (read once: it fits data.image_size and
        hints at upsampling): the first images of up to 8 classes spread over the split (a few
        directory listings, not a walk of the whole split), or the first samples of the first shard."""
        return median_short_side(self._sample_images())

    def _sample_images(self, classes: int = 8, per_class: int = 4) -> list:
        if self.format == "shards":
            first = TarShards(self.shards["train"], self.shard_cache, lambda data, *_: io.BytesIO(data))
            return [first[i] for i in range(min(classes * per_class, self.shards["train"].lengths[0]))]
        picked = self.classes[:: max(1, len(self.classes) // classes)][:classes]
        return [p for c in picked for p in sorted((self.root / "train" / c).iterdir())[:per_class] if p.is_file()]

    def _split(self, split: str, transform) -> datasets.ImageFolder:
        folder = self.root / split
        if not self.skip_bad_images:
            return GroupedImageFolder(folder, transform=transform, loader=load_rgb)
        dataset = GroupedImageFolder(folder, transform=transform, loader=load_rgb, is_valid_file=readable_image)
        candidates = sum(
            datasets.folder.has_file_allowed_extension(str(f), datasets.folder.IMG_EXTENSIONS)
            for f in folder.rglob("*")
        )
        if candidates > len(dataset):
            log.warning("%s: skipped %d unreadable of %d images", folder, candidates - len(dataset), candidates)
        return dataset

    def setup(self, stage: str | None = None) -> None:
        if self.format == "shards":
            self._setup_shards()
        else:
            self._setup_folders()
        self.test_set = self.val_set
        if stage in (None, "fit"):
            self._hint_image_size()

    def _setup_shards(self) -> None:
        train = EncodedItem(self.device_augment.plan) if self.device_augment is not None else DecodedItem(self.train_tf)
        self.train_set = TarShards(self.shards["train"], self.shard_cache, train, self.skip_bad_images)
        self.val_set = TarShards(self.shards["val"], self.shard_cache, DecodedItem(self.eval_tf), self.skip_bad_images)

    def _setup_folders(self) -> None:
        self.train_set = self._split("train", self.train_tf)
        if self.device_augment is not None:
            self.train_set = EncodedImages(self.train_set.samples, self.device_augment.plan)
        self.val_set = self._split("val", self.eval_tf)
        if self.groups:
            self.val_set.groups = self._group_indices(self.val_set)

    def collate(self, train: bool):
        return collate_encoded if train and self.device_augment is not None else None

    def transfer_batch_to_device(self, batch, device: torch.device, dataloader_idx: int):
        """Lightning's hook: data.pipeline=device decodes and augments the training batch here."""
        if isinstance(batch, EncodedBatch):
            return self.device_augment(batch, device)
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def teardown(self, stage: str) -> None:
        if self.device_augment is not None and stage == "fit":
            log_counts(self.device_augment)
        for split, dataset in (
            ("training", getattr(self, "train_set", None)),
            ("evaluation", getattr(self, "val_set", None)),
        ):
            if isinstance(dataset, TarShards) and int(dataset.skipped):
                log.warning("skipped %d bad %s samples of the shards so far", int(dataset.skipped), split)

    def _group_indices(self, dataset: datasets.ImageFolder) -> torch.Tensor:
        paths = [Path(path).relative_to(self.root).as_posix() for path, _ in dataset.samples]
        missing = [p for p in paths if p not in self.groups]
        if missing:
            raise DataError(
                f"data.groups_file has no row for {len(missing)} of {len(paths)} val images (e.g. {missing[0]}); "
                "give every image a group"
            )
        index = {name: i for i, name in enumerate(self.group_names)}
        return torch.tensor([index[self.groups[p]] for p in paths])

    def _hint_image_size(self) -> None:
        """Warn when the images are 3x or more smaller than data.image_size: upsampling adds compute, not detail."""
        side = self.sample_short_side
        if side and side * 3 <= self.image_size and self.image_size > 32:
            log.warning(
                "data.image_size=%d but the training images are about %d px on their short side: each is "
                "upsampled %.0fx. For small images try data=imagefolder_small, or data.image_size=null to fit "
                "the size to the images (%d)",
                self.image_size,
                side,
                self.image_size / side,
                fitting_image_size(side),
            )
