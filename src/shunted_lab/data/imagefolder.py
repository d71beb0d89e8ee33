"""Image folders in the ImageNet layout, or the same images as tar shards, with timm's transforms."""

import functools
import logging

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, create_transform

from .base import ImageData
from .images import fit_image_size, fitting_image_size, median_short_side
from .pipelines import PIPELINES, DecodedItem, create_pipeline
from .readers import FORMATS, create_reader
from .timm_posterize import keep_timm_posterize

log = logging.getLogger(__name__)


class ImageFolderData(ImageData):
    """A classification dataset read by one reader (data.format: readers/) and prepared for training by
    one pipeline (data.pipeline: pipelines.py); val doubles as the test split.

    Transforms come from timm's `create_transform`, so the official ImageNet recipe is a config:
    RandAugment, random erasing, bicubic resize, crop_pct for evaluation. An unreadable image stops
    the run naming the file, or with `skip_bad_images` is skipped and counted. With `groups_file`
    the evaluation also reports top-1 per group. Without `image_size` the input size fits the images
    (`fitting_image_size` of a sample's median short side). `num_classes`, where set, is checked
    against the data. The shard options (`train_shards`, `val_shards`, `shuffle_shards`,
    `shard_cache`) are the shard reader's (docs/data.md).
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
        pipeline: str = PIPELINES[0],
        format: str = FORMATS[0],
        num_classes: int | None = None,
        train_shards: str | list[str] | None = None,
        val_shards: str | list[str] | None = None,
        shuffle_shards: int = 8,
        shard_cache: str = "shard_cache",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.reader = create_reader(
            format, root, skip_bad_images, num_classes, groups_file, train_shards, val_shards, shard_cache
        )
        self.classes = self.reader.classes
        self.num_classes = len(self.classes)
        self.group_names = self.reader.group_names
        self.shard_lengths, self.shard_window = self.reader.shard_lengths, shuffle_shards
        self.image_size = image_size or fit_image_size(self.sample_short_side)
        keep_timm_posterize()
        common = dict(input_size=self.image_size, mean=tuple(mean), std=tuple(std), interpolation=interpolation)
        self.train_tf = create_transform(
            is_training=True, auto_augment=auto_augment, re_prob=re_prob, scale=tuple(scale), hflip=hflip, **common
        )
        self.eval_tf = create_transform(is_training=False, crop_pct=crop_pct, **common)
        self.pipeline = create_pipeline(pipeline, self.train_tf, skip_bad_images)

    @property
    def class_names(self) -> list[str]:
        return self.classes

    @functools.cached_property
    def sample_short_side(self) -> int | None:
        """The median short side of some training images (read once: it fits data.image_size and
        hints at upsampling)."""
        return median_short_side(self.reader.sample_files())

    def setup(self, stage: str | None = None) -> None:
        self.train_set = self.reader.split("train", self.pipeline.item)
        self.val_set = self.test_set = self.reader.split("val", DecodedItem(self.eval_tf))
        if stage in (None, "fit"):
            self._hint_image_size()

    def collate(self, train: bool):
        return self.pipeline.collate if train else None

    def transfer_batch_to_device(self, batch, device, dataloader_idx: int):
        """Lightning's hook: the pipeline may decode and augment the training batch here."""
        move = functools.partial(super().transfer_batch_to_device, device=device, dataloader_idx=dataloader_idx)
        return self.pipeline.transfer(batch, device, move)

    def teardown(self, stage: str) -> None:
        if stage == "fit":
            self.pipeline.report()
        self.reader.report()

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
