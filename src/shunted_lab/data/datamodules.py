"""LightningDataModules for image classification: SHAPES (embedded), CIFAR-10/100, image folders."""

import csv
import logging
import os
import pickle
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, create_transform
from torch.utils.data import DataLoader, Dataset
from torchvision import datasets
from torchvision.transforms import v2

from ..models.layers import check_choice
from . import shapes

log = logging.getLogger(__name__)


class DataError(ValueError):
    """A problem with the user's data met during a run (an unreadable image, a training split
    smaller than one batch): run.py ends the run with this one line, like a config error."""


class ImageClassificationData(L.LightningDataModule):
    """Shared loaders; subclasses build `train_set`, `val_set`, `test_set` in `setup`.

    Where the data knows a group for each evaluation image (SHAPES' object-size bins, an image folder's
    groups file), `group_names` lists the groups and the val/test items are (image, label, group): the
    module then also reports top-1 per group.
    """

    num_classes: int
    group_names: list[str] | None = None

    def __init__(self, name: str, batch_size: int = 128, num_workers: int = 0, image_size: int = 224):
        super().__init__()
        self.name = name
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.image_size = image_size

    def _loader(self, dataset: Dataset, train: bool) -> DataLoader:
        world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        if train and len(dataset) < self.batch_size * world:
            # The train loader drops the last partial batch: such a run would take no optimizer step.
            per_device = f" over {world} devices" if world > 1 else ""
            raise DataError(
                f"data.batch_size={self.batch_size} is larger than the training split ({len(dataset)} images"
                f"{per_device}), so no optimizer step would run; set data.batch_size <= {len(dataset) // world}"
            )
        sampler = None
        if not train and world > 1:
            # Lightning's default would pad the last batch with repeats; every image counts once here.
            sampler = UnrepeatedDistributedSampler(dataset, shuffle=False)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=train,
            sampler=sampler,
            drop_last=train,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, train=False)


class TensorImages(Dataset):
    """uint8 (N, 3, H, W) images in memory, a transform applied per item; `objects` (N, 3): each
    image's object centre row, column and half size in pixels, where the data knows them; `groups`
    (N,): each image's group index, which then ends every item."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        transform,
        objects: torch.Tensor | None = None,
        groups: torch.Tensor | None = None,
    ):
        self.images, self.labels, self.transform, self.objects, self.groups = images, labels, transform, objects, groups

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        item = self.transform(self.images[i]), int(self.labels[i])
        return item if self.groups is None else (*item, int(self.groups[i]))


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


class ShapesData(ImageClassificationData):
    """SHAPES (data/shapes.py), with object sizes that train and test draw from set apart for
    scale-shift studies: val draws from `train_scales` (model selection never sees the test sizes),
    test from `test_scales`. Evaluation images are grouped by object size into `scale_bins`."""

    num_classes = len(shapes.CLASSES)
    class_names = list(shapes.CLASSES)

    def __init__(
        self,
        num_train: int = 10000,
        num_val: int = 2000,
        num_test: int = 2000,
        clutter: int = 4,
        seed: int = 0,
        root: str | None = None,
        image_size: int = 64,
        train_scales: tuple[float, float] = shapes.SCALES,
        test_scales: tuple[float, float] | None = None,
        scale_bins: dict[str, float] | None = None,
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

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        (lo, hi), n = self.scales[name], self.sizes[name]
        args = (n, self.seed, name, self.image_size, self.clutter, (lo, hi))
        if self.cache_dir is None:
            return shapes.generate(*args)
        # "-objects": caches before the object records held (images, labels) only.
        path = self.cache_dir / (
            f"shapes-{name}-n{n}-seed{self.seed}-{self.image_size}px-clutter{self.clutter}-scales{lo:g}-{hi:g}-objects.pt"
        )
        if path.is_file():
            return torch.load(path, weights_only=True)
        data = shapes.generate(*args)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save(data, tmp)
        os.replace(tmp, path)  # atomic: concurrent sweep jobs never read a half-written cache
        return data

    def scale_groups(self, objects: torch.Tensor) -> torch.Tensor | None:
        """Each object's bin: the first whose bound is above its side / image side (the last bin holds 1.0)."""
        if not self.scale_bins:
            return None
        side = 2 * objects[:, 2] / self.image_size
        bounds = torch.tensor(list(self.scale_bins.values())[:-1], dtype=side.dtype)
        return torch.bucketize(side, bounds, right=True)

    def setup(self, stage: str | None = None) -> None:
        normalize = [v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.5] * 3, [0.25] * 3)]
        train_tf = v2.Compose([v2.RandomHorizontalFlip(), *normalize])
        eval_tf = v2.Compose(normalize)
        images, labels, objects = self.split("train")
        self.train_set = TensorImages(images, labels, train_tf, objects)
        self.val_set, self.test_set = (
            TensorImages(images, labels, eval_tf, objects, self.scale_groups(objects))
            for images, labels, objects in (self.split("val"), self.split("test"))
        )


class NumpyOnlyUnpickler(pickle.Unpickler):
    """CIFAR's python batches are pickled dicts of numpy arrays; refuse any other global."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR batch")
        return super().find_class(module, name)


def read_cifar_batches(paths: list[Path], label_key: str) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    for path in paths:
        try:
            with open(path, "rb") as f:
                batch = NumpyOnlyUnpickler(f, encoding="bytes").load()
            images.append(torch.as_tensor(np.asarray(batch[b"data"], dtype=np.uint8)).view(-1, 3, 32, 32))
            labels.append(torch.as_tensor(batch[label_key]))
        except FileNotFoundError:
            raise
        except Exception as e:
            raise ValueError(f"{path} is not a readable CIFAR python batch: {e}") from e
    return torch.cat(images), torch.cat(labels)


class CIFARData(ImageClassificationData):
    """CIFAR-10/100 from the python-pickle batches; val is a fixed held-out part of train."""

    LAYOUT = {  # folder, train files, test files, label key
        10: ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], b"labels"),
        100: ("cifar-100-python", ["train"], ["test"], b"fine_labels"),
    }
    MEAN_STD = {
        10: ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
        100: ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    }

    def __init__(self, root: str, num_classes: int = 10, download: bool = False, val_fraction: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        check_choice("data.num_classes", num_classes, self.LAYOUT)
        self.root, self.num_classes, self.download, self.val_fraction = Path(root), num_classes, download, val_fraction
        folder, train_files, test_files, _ = self.LAYOUT[num_classes]
        missing = [f for f in train_files + test_files if not (self.root / folder / f).is_file()]
        if missing and not download:
            raise FileNotFoundError(
                f"data.root={str(self.root)!r} has no CIFAR-{num_classes} files ({folder}/{missing[0]} missing); "
                "point data.root at the folder holding it, or set data.download=true"
            )

    def prepare_data(self) -> None:
        if self.download:
            (datasets.CIFAR10 if self.num_classes == 10 else datasets.CIFAR100)(self.root, download=True)

    def setup(self, stage: str | None = None) -> None:
        folder, train_files, test_files, label_key = self.LAYOUT[self.num_classes]
        mean, std = self.MEAN_STD[self.num_classes]
        resize = [v2.Resize(self.image_size, antialias=True)] if self.image_size != 32 else []
        tail = [*resize, v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
        train_tf = v2.Compose([v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip(), *tail])
        eval_tf = v2.Compose(tail)
        images, labels = read_cifar_batches([self.root / folder / f for f in train_files], label_key)
        # The same split for every run and seed, so that runs compare on the same validation images.
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
        num_val = int(len(order) * self.val_fraction)
        self.train_set = TensorImages(images[order[num_val:]], labels[order[num_val:]], train_tf)
        self.val_set = TensorImages(images[order[:num_val]], labels[order[:num_val]], eval_tf)
        self.test_set = TensorImages(
            *read_cifar_batches([self.root / folder / f for f in test_files], label_key), eval_tf
        )


def load_rgb(path: str) -> Image.Image:
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read image {path}: {e} (set data.skip_bad_images=true to skip such files)") from e


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
    """An ImageFolder whose items end with a group index once `groups` is set (per-group metrics)."""

    groups: torch.Tensor | None = None

    def __getitem__(self, i: int):
        item = super().__getitem__(i)
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


class ImageFolderData(ImageClassificationData):
    """`root/train/<class>/*` and `root/val/<class>/*` (ImageNet layout); val doubles as the test split.

    Transforms come from timm's `create_transform`, so the official ImageNet recipe is a config:
    RandAugment, random erasing, bicubic resize, crop_pct for evaluation. An unreadable image stops
    the run naming the file; with `skip_bad_images` every file is verified first (slow on large
    sets) and the bad ones are skipped and counted. With `groups_file` (read_groups) the evaluation
    also reports top-1 per group; every val image needs a row.
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
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.root = Path(root)
        self.skip_bad_images = skip_bad_images
        self.groups = read_groups(Path(groups_file)) if groups_file else None
        self.group_names = sorted(set(self.groups.values())) if self.groups else None
        classes = {split: self._classes(split) for split in ("train", "val")}
        if classes["train"] != classes["val"]:
            raise ValueError(
                f"data.root={str(self.root)!r}: train/ and val/ hold different classes "
                f"(only in train: {sorted(set(classes['train']) - set(classes['val']))[:5]}, "
                f"only in val: {sorted(set(classes['val']) - set(classes['train']))[:5]})"
            )
        self.num_classes = len(classes["train"])
        common = dict(input_size=self.image_size, mean=tuple(mean), std=tuple(std), interpolation=interpolation)
        self.train_tf = create_transform(
            is_training=True, auto_augment=auto_augment, re_prob=re_prob, scale=tuple(scale), hflip=hflip, **common
        )
        self.eval_tf = create_transform(is_training=False, crop_pct=crop_pct, **common)

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
        self.train_set = self._split("train", self.train_tf)
        self.val_set = self._split("val", self.eval_tf)
        if self.groups:
            self.val_set.groups = self._group_indices(self.val_set)
        self.test_set = self.val_set
        if stage in (None, "fit"):
            self._hint_image_size()

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

    def _hint_image_size(self, samples: int = 32) -> None:
        """Warn when the images are 3x or more smaller than data.image_size: upsampling adds compute, not detail."""
        paths = [path for path, _ in self.train_set.samples[:: max(1, len(self.train_set) // samples)]]
        sides = []
        for path in paths:
            try:
                with Image.open(path) as image:  # reads the header only
                    sides.append(min(image.size))
            except (OSError, ValueError):
                continue
        side = sorted(sides)[len(sides) // 2] if sides else None
        if side and side * 3 <= self.image_size and self.image_size > 32:
            log.warning(
                "data.image_size=%d but the training images are about %d px on their short side: each is "
                "upsampled %.0fx. For small images try data=imagefolder_small (or data.image_size=%d)",
                self.image_size,
                side,
                self.image_size / side,
                max(32, side),
            )
