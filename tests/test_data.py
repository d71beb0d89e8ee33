"""The image-folder data path: the official augmentation under today's Pillow, and a failing item's one line."""

import pytest
from helpers import compose_cfg, image_folder_cfg, write_image_folder
from hydra.utils import instantiate
from timm.data import auto_augment

from shunted_lab.data.images import load_rgb, transformed
from shunted_lab.data.timm_posterize import POSTERIZE_OPS, timm_posterize
from shunted_lab.exits import DataError
from shunted_lab.training.fit import train


def test_imagenet_training_transform_survives_20000_draws(tmp_path):
    """rand-m9-mstd0.5-inc1 asks for 0-bit posterize on ~0.15% of draws; Pillow 13 refuses 0 bits."""
    write_image_folder(tmp_path / "imagenet", classes=("a",), per_class=1, size=24)
    cfg = compose_cfg(tmp_path, "data=imagenet", f"data.root={tmp_path}/imagenet", "data.image_size=16")
    dm = instantiate(cfg.data)
    path = str(tmp_path / "imagenet/train/a/0.png")
    image = load_rgb(path)
    assert all(auto_augment.NAME_TO_OP[name] is timm_posterize for name in POSTERIZE_OPS)
    for _ in range(20_000):
        assert transformed(dm.train_tf, image, path).shape == (3, 16, 16)


def test_zero_bit_posterize_is_black_as_before_pillow_13():
    from PIL import Image

    image = Image.new("RGB", (4, 4), (200, 100, 50))
    assert timm_posterize(image, 0).getextrema() == ((0, 0),) * 3
    assert timm_posterize(image, 8) is image
    assert timm_posterize(image, 1).getpixel((0, 0)) == (128, 0, 0)


def test_a_transform_that_raises_in_a_worker_is_one_line_naming_the_file_and_the_transform(tmp_path, monkeypatch):
    import shunted_lab.data.imagefolder as imagefolder

    class Explodes:
        def __call__(self, image):
            raise ValueError("boom")

    timm_transform = imagefolder.create_transform

    def with_a_failing_step(is_training, **kwargs):
        transform = timm_transform(is_training=is_training, **kwargs)
        if is_training:
            transform.transforms.insert(1, Explodes())
        return transform

    monkeypatch.setattr(imagefolder, "create_transform", with_a_failing_step)
    write_image_folder(tmp_path / "images")
    with pytest.raises(DataError) as raised:
        train(image_folder_cfg(tmp_path, "data.num_workers=1"))
    from shunted_lab.config import error_line

    line = error_line(raised.value)
    assert "\n" not in line and "the transform Explodes failed on" in line and "/train/" in line and "boom" in line
