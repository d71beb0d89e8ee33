"""Segmentation data read from folders: a generic layout (`data=segfolder`) and ADE20K's (`data=ade20k`).

segfolder: `root/classes.txt` (one class name per line; line i is the label value i),
`root/images/<split>/<name>.<jpg|png|...>` and `root/masks/<split>/<name>.png`, a single-channel
map of label values, `ignore_index` (255) where unlabelled; splits train and val (val is also the
test split).
ade20k: `root/ADEChallengeData2016/{images,annotations}/{training,validation}/` as released: 150
classes, label 0 ("other") ignored and the rest shifted down by one (mmsegmentation's
`reduce_zero_label`).

Training follows the mmsegmentation recipe: the image is rescaled so that its short side is
`image_size` times a ratio drawn from `ratio_range`, a random `image_size` square is cropped (padded
with ignored pixels where the image is smaller) and flipped half the time. Evaluation rescales the
short side to `image_size`; a batch is padded to its largest image with ignored pixels, so the
scores count every real pixel of the resized image once (mmsegmentation scores at the original
resolution instead). Without `image_size` the size fits the images, as image folders fit theirs
(images.fit_image_size). Every image needs its mask, and a mask value that is no class (nor
`ignore_index`) stops the run naming the file.
"""

import math
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.transforms.v2 import functional as TF

from ..exits import DataError
from .base import ImageData
from .images import fit_image_size, load_rgb, median_short_side

ADE20K_SPLITS = {"train": "training", "val": "validation"}


class SegmentationPairs(Dataset):
    """(image, mask) pairs from files, with the joint transforms of the module docstring."""

    def __init__(self, pairs: list[tuple[Path, Path]], data: "SegmentationFolderData", train: bool):
        self.pairs, self.data, self.train = pairs, data, train

    def __len__(self) -> int:
        return len(self.pairs)

    def read_mask(self, path: Path) -> torch.Tensor:
        try:
            with Image.open(path) as mask:
                values = np.array(mask)
        except (OSError, ValueError) as e:
            raise DataError(f"cannot read mask {path}: {e}") from e
        if values.ndim != 2:
            raise DataError(f"mask {path} has {values.ndim} dimensions; expected a single-channel map of labels")
        labels = torch.from_numpy(values.astype(np.int64))
        if self.data.reduce_zero_label:
            labels = torch.where(labels == 0, self.data.ignore_index, labels - 1)
        bad = (labels >= self.data.num_classes) & (labels != self.data.ignore_index)
        if bad.any():
            raise DataError(
                f"mask {path} holds label {int(labels[bad].max()) + int(self.data.reduce_zero_label)}, "
                f"which is no class: expected 0..{self.data.num_classes - 1 + int(self.data.reduce_zero_label)} "
                f"or {self.data.ignore_index} (ignored)"
            )
        return labels

    def __getitem__(self, i: int):
        image_path, mask_path = self.pairs[i]
        image = TF.pil_to_tensor(load_rgb(str(image_path)))
        mask = self.read_mask(mask_path)
        if image.shape[-2:] != mask.shape:
            raise DataError(f"mask {mask_path} is {tuple(mask.shape)} but its image is {tuple(image.shape[-2:])}")
        size = self.data.image_size
        if self.train:
            lo, hi = self.data.ratio_range
            image, mask = rescale(image, mask, size * (lo + (hi - lo) * float(torch.rand(()))))
            image, mask = random_crop(image, mask, size, self.data.ignore_index)
            if torch.rand(()) < 0.5:  # torch's generator: SeededItems seeds it per item
                image, mask = image.flip(-1), mask.flip(-1)
        else:
            image, mask = rescale(image, mask, size)
        image = TF.normalize(image.float() / 255, self.data.mean, self.data.std)
        return image, mask


def rescale(image: torch.Tensor, mask: torch.Tensor, short_side: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Image (bilinear) and mask (nearest) resized so that the short side is `short_side` pixels."""
    h, w = image.shape[-2:]
    scale = short_side / min(h, w)
    size = [max(1, round(h * scale)), max(1, round(w * scale))]
    image = TF.resize(image, size, antialias=True)
    mask = F.interpolate(mask[None, None].float(), size=size, mode="nearest")[0, 0].long()
    return image, mask


def random_crop(image: torch.Tensor, mask: torch.Tensor, size: int, ignore_index: int):
    """A `size` square at a random place; padded (image 0, mask ignored) where the image is smaller."""
    h, w = image.shape[-2:]
    pad_h, pad_w = max(0, size - h), max(0, size - w)
    if pad_h or pad_w:
        image = F.pad(image, (0, pad_w, 0, pad_h))
        mask = F.pad(mask, (0, pad_w, 0, pad_h), value=ignore_index)
        h, w = image.shape[-2:]
    top = int(torch.randint(h - size + 1, ()))
    left = int(torch.randint(w - size + 1, ()))
    return image[:, top : top + size, left : left + size], mask[top : top + size, left : left + size]


def padded_batch(items: list, ignore_index: int, multiple: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Images of different sizes as one batch: padded to the largest, rounded up to `multiple` (masks: ignored)."""
    h = math.ceil(max(image.shape[-2] for image, _ in items) / multiple) * multiple
    w = math.ceil(max(image.shape[-1] for image, _ in items) / multiple) * multiple
    images = torch.stack([F.pad(im, (0, w - im.shape[-1], 0, h - im.shape[-2])) for im, _ in items])
    masks = torch.stack([F.pad(m, (0, w - m.shape[-1], 0, h - m.shape[-2]), value=ignore_index) for _, m in items])
    return images, masks


class SegmentationFolderData(ImageData):
    """The generic segfolder layout (module docstring)."""

    objective = "segmentation"
    reduce_zero_label = False

    def __init__(
        self,
        root: str,
        image_size: int | None = 512,
        ratio_range: tuple[float, float] = (0.5, 2.0),
        ignore_index: int = 255,
        mean: tuple = IMAGENET_DEFAULT_MEAN,
        std: tuple = IMAGENET_DEFAULT_STD,
        classes: list[str] | None = None,
        **kwargs,
    ):
        super().__init__(image_size=image_size, **kwargs)
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"data.root={root!r} does not exist")
        lo, hi = (float(r) for r in ratio_range)
        if not 0 < lo <= hi:
            raise ValueError(f"data.ratio_range={list(ratio_range)} is not allowed; expected [lo, hi], 0 < lo <= hi")
        self.ratio_range, self.ignore_index = (lo, hi), ignore_index
        self.mean, self.std = list(mean), list(std)
        self.classes = list(classes) if classes else self.read_classes()
        self.num_classes = len(self.classes)
        self.pairs = {split: self.find_pairs(split) for split in ("train", "val")}
        if image_size is None:  # from 32 training images spread over the split
            train = self.pairs["train"]
            self.image_size = fit_image_size(
                median_short_side(image for image, _ in train[:: max(1, len(train) // 32)][:32])
            )

    @property
    def class_names(self) -> list[str]:
        return self.classes

    def read_classes(self) -> list[str]:
        path = self.root / "classes.txt"
        if not path.is_file():
            raise FileNotFoundError(f"data.root={str(self.root)!r} has no classes.txt (one class name per line)")
        names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        if not names:
            raise ValueError(f"{path} names no class; expected one class name per line")
        return names

    def split_dirs(self, split: str) -> tuple[Path, Path]:
        return self.root / "images" / split, self.root / "masks" / split

    def find_pairs(self, split: str) -> list[tuple[Path, Path]]:
        images, masks = self.split_dirs(split)
        for folder in (images, masks):
            if not folder.is_dir():
                raise FileNotFoundError(f"data.root={str(self.root)!r} has no {folder.relative_to(self.root)}/ folder")
        found = sorted(p for p in images.iterdir() if p.suffix.lower() in IMG_EXTENSIONS)
        if not found:
            raise FileNotFoundError(f"{images} holds no images")
        missing = [p.name for p in found if not (masks / f"{p.stem}.png").is_file()]
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} images of {images} have no mask in {masks} (e.g. {missing[0]} needs "
                f"{Path(missing[0]).stem}.png)"
            )
        return [(p, masks / f"{p.stem}.png") for p in found]

    def collate(self, train: bool):
        # Evaluation images keep their aspect ratios: each batch is padded to its largest.
        return None if train else partial(padded_batch, ignore_index=self.ignore_index)

    def setup(self, stage: str | None = None) -> None:
        self.train_set = SegmentationPairs(self.pairs["train"], self, train=True)
        self.val_set = self.test_set = SegmentationPairs(self.pairs["val"], self, train=False)


class ADE20KData(SegmentationFolderData):
    """ADE20K (ADEChallengeData2016) as released; the class names come from conf/data/ade20k.yaml."""

    reduce_zero_label = True

    def split_dirs(self, split: str) -> tuple[Path, Path]:
        base = self.root / "ADEChallengeData2016"
        if not base.is_dir() and (self.root / "images").is_dir():
            base = self.root  # data.root may also name the ADEChallengeData2016 folder itself
        return base / "images" / ADE20K_SPLITS[split], base / "annotations" / ADE20K_SPLITS[split]
