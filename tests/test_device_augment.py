"""data.pipeline=device: the workers draw timm's augmentation, the device applies it, and the result is
the `workers` pipeline's image for the same item (PIL's ops within a grey level)."""

import io
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import image_folder_cfg, read_metrics, write_image_folder
from hydra.utils import instantiate
from PIL import Image
from timm.data import auto_augment, create_transform
from timm.data.transforms import RandomResizedCropAndInterpolation

from shunted_lab.data.device.augment import GEOMETRIC, POINT_OPS, DeviceAugment, affine_matrix, pil_affine
from shunted_lab.data.device.draws import OP_KINDS, RAND_AUGMENT_OPS, AugmentPlan, draw
from shunted_lab.data.device.encoded import EncodedItem, collate_encoded
from shunted_lab.data.pipelines import DecodedItem
from shunted_lab.data.readers.folder import FolderImages
from shunted_lab.data.resumable import SeededItems
from shunted_lab.data.timm_posterize import keep_timm_posterize
from shunted_lab.exits import ConfigError, DataError
from shunted_lab.training.fit import train

CPU = torch.device("cpu")
FILL = (124, 116, 104)  # the ImageNet mean colour, as timm fills its geometric ops
IMAGENET = dict(auto_augment="rand-m9-mstd0.5-inc1", re_prob=0.25, interpolation="bicubic")  # conf/data/imagenet.yaml


def photo(height: int = 60, width: int = 80, seed: int = 0) -> np.ndarray:
    """Gradients with noise: every grey level in use, and edges for the geometric ops to move."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:height, 0:width]
    image = np.stack([cols * 255 / width, rows * 255 / height, (3 * cols + rows) % 256], -1)
    return np.clip(image + rng.normal(0, 25, image.shape), 0, 255).astype(np.uint8)


def flat(size: int = 64) -> np.ndarray:
    """Four flat regions: a level k must stay k where PIL's filters keep it."""
    image = np.zeros((size, size, 3), np.uint8)
    image[:, : size // 2], image[:, size // 2 :] = (30, 200, 90), (170, 17, 250)
    image[size // 2 :, :, 1] = 128
    return image


def narrow(size: int = 64) -> np.ndarray:
    """Levels 40-200 only: auto_contrast stretches them, through PIL's float64 look-up table."""
    return (40 + photo(size, size).astype(np.int32) * 160 // 255).astype(np.uint8)


IMAGES = {"photo": lambda: photo(64, 64), "flat": flat, "narrow": narrow}


def as_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(image)).permute(2, 0, 1)


LEVELS = {
    "AutoContrast": [None],
    "Equalize": [None],
    "Invert": [None],
    "Rotate": [27.0, -13.3],
    "PosterizeIncreasing": [0, 1, 3],
    "SolarizeIncreasing": [26, 128, 256],
    "SolarizeAdd": [99],
    "ColorIncreasing": [0.1, 1.9],
    "ContrastIncreasing": [0.1, 1.9],
    "BrightnessIncreasing": [0.1, 1.9],
    "SharpnessIncreasing": [0.1, 1.9],
    "ShearX": [0.27, -0.3],
    "ShearY": [0.12],
    "TranslateXRel": [0.4, -0.13],
    "TranslateYRel": [-0.2],
}


OP_CASES = [(name, level, Image.BICUBIC) for name, levels in LEVELS.items() for level in levels]
OP_CASES += [(name, LEVELS[name][0], Image.BILINEAR) for name in ("Rotate", "ShearX")]  # the filter matters to these


@pytest.mark.parametrize("image_kind", IMAGES)
@pytest.mark.parametrize("name,level,interpolation", OP_CASES)
def test_each_op_gives_timms_pil_result_exactly(name, level, interpolation, image_kind):
    """Every value, on noisy, flat and narrow-range images alike."""
    keep_timm_posterize()
    image = IMAGES[image_kind]()
    args = () if level is None else (level,)
    expected = as_tensor(
        auto_augment.NAME_TO_OP[name](Image.fromarray(image), *args, fillcolor=FILL, resample=interpolation)
    )
    kind, x = RAND_AUGMENT_OPS[name], torch.from_numpy(image).permute(2, 0, 1)[None]
    arg = torch.tensor([0.0 if level is None else float(level)], dtype=torch.float64)  # as draw() keeps it
    if kind in GEOMETRIC:
        mode = "bicubic" if interpolation == Image.BICUBIC else "bilinear"
        out = pil_affine(x, affine_matrix(kind, arg, 64), torch.tensor(FILL, dtype=torch.float32), mode)
    else:
        out = POINT_OPS[kind](x, arg)
    assert out.dtype == torch.uint8 and torch.equal(out[0], expected)


def items(tmp_path: Path, transform, count: int = 1) -> tuple[list, list]:
    """`count` JPEGs of different shapes, as the workers pipeline and the device pipeline list them."""
    paths = []
    for i in range(count):
        path = tmp_path / f"{i}.jpg"
        Image.fromarray(photo(60 + 17 * i, 90 - 11 * i, seed=i)).save(path, quality=90)
        paths.append((str(path), i))
    return FolderImages(paths, DecodedItem(transform)), FolderImages(paths, EncodedItem(AugmentPlan.of(transform)))


@pytest.mark.parametrize(
    "recipe", [IMAGENET, dict(interpolation="bilinear")], ids=["imagenet RandAugment+erasing", "ColorJitter"]
)
def test_a_batch_on_the_device_is_the_workers_pipelines_batch_for_the_same_items(tmp_path, recipe):
    """Same (seed, epoch, index), same draws: the crop box exactly, the image within a few grey levels:
    each op is within one (above), and a later op can widen a one-level difference (contrast by 1.4,
    a solarize threshold crossed). Nearly every value matches."""
    keep_timm_posterize()
    transform = create_transform(48, is_training=True, **recipe)
    workers, encoded = items(tmp_path, transform, count=4)
    plan = AugmentPlan.of(transform)
    keys = [(epoch, index) for epoch in range(40) for index in range(4)]
    expected = torch.stack([image for image, _ in SeededItems(workers, seed=3).__getitems__(keys)])
    batch = collate_encoded(SeededItems(encoded, seed=3).__getitems__(keys))
    images, labels = DeviceAugment(plan)(batch, CPU)
    assert labels.tolist() == [index for _, index in keys] and images.shape == expected.shape
    grey_levels = ((images - expected) * torch.tensor(plan.std).view(1, 3, 1, 1) * 255).abs()
    assert grey_levels.max() < 5.5 and grey_levels.mean() < 0.05 and (grey_levels > 1.01).float().mean() < 0.01


def test_the_crop_box_and_the_ops_are_those_timm_draws_from_the_same_generators():
    keep_timm_posterize()
    transform = create_transform(224, is_training=True, **IMAGENET)
    plan = AugmentPlan.of(transform)
    crop: RandomResizedCropAndInterpolation = transform.transforms[0]
    for seed in range(200):
        width, height = 200 + seed, 500 - seed
        random.seed(seed)
        expected = crop.get_params(Image.new("RGB", (width, height)), crop.scale, crop.ratio)
        random.seed(seed)
        assert tuple(draw(plan, width, height)["crop"]) == expected


def test_the_drawn_ops_and_magnitudes_follow_timms_distribution():
    """rand-m9-mstd0.5-inc1 over 20,000 items: 2 layers, each one of 15 ops uniformly, applied with p 0.5;
    the magnitude N(9, 0.5) clipped to [0, 10], the sign of a signed op a coin flip."""
    keep_timm_posterize()
    plan = AugmentPlan.of(create_transform(224, is_training=True, **IMAGENET))
    random.seed(0), np.random.seed(0), torch.manual_seed(0)
    draws = [draw(plan, 500, 375) for _ in range(20000)]
    ops = torch.tensor([d["op_index"] for d in draws]).flatten()
    args = torch.tensor([d["op_arg"] for d in draws]).flatten()
    applied = (ops >= 0).float().mean().item()
    assert abs(applied - 0.5) < 0.01
    counts = Counter(ops[ops >= 0].tolist())
    expected = len(ops) * 0.5 / 15
    chi2 = sum((counts[k] - expected) ** 2 / expected for k in range(15))
    assert len(counts) == 15 and chi2 < 36.1  # chi-square, 14 degrees of freedom: p > 0.001
    rotate = args[ops == OP_KINDS.index("rotate")]
    assert abs((rotate > 0).float().mean() - 0.5) < 0.05  # the random sign
    assert abs(rotate.abs().mean() - 30 * 8.996 / 10) < 0.3  # E[clip(N(9, 0.5), 0, 10)] = 8.996
    bits = args[ops == OP_KINDS.index("posterize")]
    assert set(bits.tolist()) == {0.0, 1.0, 2.0}  # 4 - int(m / 10 * 4): 0 bits where m >= 10, P = 2.3%
    assert abs((bits == 0).float().mean() - 0.0228) < 0.01
    erased = torch.tensor([d["erased"][0][2] > 0 for d in draws]).float().mean()
    assert abs(erased - 0.25) < 0.02  # re_prob


def test_images_the_device_cannot_decode_are_decoded_by_the_workers_and_counted(tmp_path):
    transform = create_transform(32, is_training=True, interpolation="bicubic")
    pixels = photo(40, 50)
    files = {"rgb.jpg": Image.fromarray(pixels), "grey.jpg": Image.fromarray(pixels[..., 0])}
    files |= {"cmyk.jpg": Image.fromarray(pixels).convert("CMYK"), "image.png": Image.fromarray(pixels)}
    for name, image in files.items():
        image.save(tmp_path / name)
    dataset = FolderImages([(str(tmp_path / name), 0) for name in files], EncodedItem(AugmentPlan.of(transform)))
    augment = DeviceAugment(dataset.item.plan)
    images, _ = augment(collate_encoded([dataset[i] for i in range(4)]), CPU)
    assert images.shape == (4, 3, 32, 32) and augment.worker_decoded == 3 and augment.images == 4


def corrupt_jpeg(path: Path) -> Path:
    """A JPEG whose header reads (the workers see its size) and whose image data does not decode."""
    buffer = io.BytesIO()
    Image.fromarray(photo(40, 48)).save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    start = data.index(b"\xff\xda")  # start of scan: garble everything after it
    data[start + 2 :] = b"\x00\x07" + bytes(range(256)) * 4
    path.write_bytes(bytes(data))
    return path


def test_an_undecodable_jpeg_is_one_line_naming_it_or_skipped_keeping_the_batch_shape(tmp_path):
    transform = create_transform(32, is_training=True, interpolation="bicubic")
    write_image_folder(tmp_path, classes=("cat",), per_class=3, suffix="jpg")
    bad = corrupt_jpeg(tmp_path / "train" / "cat" / "bad.jpg")
    samples = [(str(p), 0) for p in sorted((tmp_path / "train" / "cat").iterdir())]
    dataset = FolderImages(samples, EncodedItem(AugmentPlan.of(transform)))
    batch = lambda: collate_encoded([dataset[i] for i in range(len(samples))])  # noqa: E731
    with pytest.raises(DataError, match=rf"cannot decode image {bad}: .*data.skip_bad_images=true"):
        DeviceAugment(dataset.item.plan)(batch(), CPU)
    skipping = DeviceAugment(dataset.item.plan, skip_bad_images=True)
    images, labels = skipping(batch(), CPU)
    assert images.shape == (4, 3, 32, 32) and skipping.bad_skipped == 1


def test_a_recipe_the_device_cannot_apply_is_a_config_error_naming_it(tmp_path):
    with pytest.raises(
        ConfigError, match=r"cannot apply the training transform AutoAugment on the device; use data.pipeline=workers"
    ):
        AugmentPlan.of(create_transform(32, is_training=True, auto_augment="original", interpolation="bicubic"))
    with pytest.raises(ConfigError, match=r"data.pipeline=device cannot apply data.interpolation=random"):
        AugmentPlan.of(create_transform(32, is_training=True, interpolation="random"))
    write_image_folder(tmp_path / "images")
    with pytest.raises(ConfigError, match=r"data.pipeline=gpu is not allowed; expected one of \['workers', 'device'\]"):
        train(image_folder_cfg(tmp_path, "data.pipeline=gpu"))


def test_a_run_on_the_device_pipeline_trains_and_resumes_mid_epoch_on_the_same_batches(tmp_path):
    write_image_folder(tmp_path / "images", per_class=8, suffix="jpg")
    cfg = image_folder_cfg(
        tmp_path, "data.pipeline=device", "data.auto_augment=rand-m9-mstd0.5-inc1", "data.re_prob=0.25"
    )
    train(cfg)
    metrics = read_metrics(cfg)
    assert metrics["global_step"] == 6 and 0.0 <= metrics["val/top1"] <= 1.0  # 24 images, batch 4

    def epoch(datamodule, skip: int = 0) -> list[torch.Tensor]:
        loader = datamodule.train_dataloader()
        batches = [datamodule.transfer_batch_to_device(b, CPU, 0)[0] for b in loader]
        return batches[skip:] if skip else batches

    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    whole = epoch(datamodule)
    resumed = instantiate(cfg.data)
    resumed.setup("fit")
    resumed.load_state_dict({"train_loader": {"epoch": 0, "batches": 2}})
    rest = epoch(resumed)
    assert len(rest) == 4 and all(torch.equal(a, b) for a, b in zip(rest, whole[2:], strict=True))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="nvJPEG and the ops on a GPU")
def test_a_batch_decoded_and_augmented_on_the_gpu_is_the_cpus_batch(tmp_path):
    """nvJPEG's IDCT may differ from libjpeg-turbo's by a level or two; the ops are the same arithmetic."""
    keep_timm_posterize()
    transform = create_transform(64, is_training=True, **IMAGENET)
    _, encoded = items(tmp_path, transform, count=4)
    plan = AugmentPlan.of(transform)
    keys = [(epoch, index) for epoch in range(16) for index in range(4)]
    on_cpu, _ = DeviceAugment(plan)(collate_encoded(SeededItems(encoded, seed=1).__getitems__(keys)), CPU)
    batch = collate_encoded(SeededItems(encoded, seed=1).__getitems__(keys)).pin_memory()
    on_gpu, labels = DeviceAugment(plan)(batch, torch.device("cuda"))
    assert on_gpu.is_cuda and labels.is_cuda and on_gpu.shape == on_cpu.shape
    grey_levels = ((on_gpu.cpu() - on_cpu) * torch.tensor(plan.std).view(1, 3, 1, 1) * 255).abs()
    assert grey_levels.mean() < 0.5 and (grey_levels > 3.01).float().mean() < 0.01
