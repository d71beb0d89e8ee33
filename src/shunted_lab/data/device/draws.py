"""A training item's augmentation, drawn in a loader worker exactly as timm's transform would draw it,
and applied later to the whole batch on the training device (data.pipeline=device: augment.py).

The parameters come from timm's and torchvision's own transform objects, as `create_transform` built
them for the `workers` pipeline: `AugmentPlan.of` reads the Compose, and `draw` runs each step's
random part in the order the Compose would, with the same generators (Python's `random`, numpy's,
torch's CPU generator) on an image that records instead of drawing pixels:

- RandomResizedCropAndInterpolation: its `get_params` on the image's size (read from the header);
- RandomHorizontalFlip: `torch.rand(1) < p`, as torchvision draws it;
- RandAugment: timm's `RandAugment.__call__` itself, over copies of its ops whose pixel function
  records (op, level arguments): the op choice, the apply probability, the magnitude noise and the
  random signs are timm's code;
- ColorJitter: torchvision's `get_params` (the order of the ops and their factors);
- RandomErasing: timm's `_erase` itself, on a recorder that keeps the rectangle it writes.

Seeded per item by (seed, epoch, index) (resumable.SeededItems), an item's draws are then the
`workers` pipeline's draws for the same item: same ops, magnitudes and crop boxes, and a mid-epoch
resume stays exact. A step this module does not know is a config error naming it.
"""

import copy
from dataclasses import dataclass

import torch
from timm.data.auto_augment import RandAugment
from timm.data.random_erasing import RandomErasing
from timm.data.transforms import MaybeToTensor, RandomResizedCropAndInterpolation
from torchvision import transforms as tv

from ...exits import ConfigError

# What the device does for each of timm's RandAugment ops (augment.py's POINT_OPS and GEOMETRIC);
# a batch carries the index in OP_KINDS.
OP_KINDS = (
    "auto_contrast", "equalize", "invert", "rotate", "posterize", "solarize", "solarize_add",
    "color", "contrast", "brightness", "sharpness", "shear_x", "shear_y", "translate_x_rel", "translate_y_rel",
)  # fmt: skip
RAND_AUGMENT_OPS = {
    "AutoContrast": "auto_contrast",
    "Equalize": "equalize",
    "Invert": "invert",
    "Rotate": "rotate",
    **dict.fromkeys(("Posterize", "PosterizeIncreasing", "PosterizeOriginal"), "posterize"),
    **dict.fromkeys(("Solarize", "SolarizeIncreasing"), "solarize"),
    "SolarizeAdd": "solarize_add",
    **dict.fromkeys(("Color", "ColorIncreasing"), "color"),
    **dict.fromkeys(("Contrast", "ContrastIncreasing"), "contrast"),
    **dict.fromkeys(("Brightness", "BrightnessIncreasing"), "brightness"),
    **dict.fromkeys(("Sharpness", "SharpnessIncreasing"), "sharpness"),
    "ShearX": "shear_x",
    "ShearY": "shear_y",
    "TranslateXRel": "translate_x_rel",
    "TranslateYRel": "translate_y_rel",
}
INTERPOLATIONS = ("bilinear", "bicubic")
PIL_INTERPOLATIONS = {2: "bilinear", 3: "bicubic"}  # PIL's resample codes, as timm's ops hold them


class Recorder:
    """Stands in for the image while timm draws: a RandAugment op's pixel function records its
    (name, level arguments); an erased rectangle records its (top, left, height, width)."""

    def __init__(self):
        self.ops: list[tuple[str, tuple]] = []
        self.erased: list[tuple[int, int, int, int]] = []

    def __setitem__(self, key, value) -> None:  # timm's _erase: img[:, top:top + h, left:left + w] = pixels
        _, rows, cols = key
        self.erased.append((rows.start, cols.start, rows.stop - rows.start, cols.stop - cols.start))


def recording_op(op):
    """A copy of timm's AugmentOp whose draws are timm's and whose pixel function records them."""
    name = op.name
    recording = copy.copy(op)
    recording.aug_fn = lambda image, *args, **_: image.ops.append((name, args)) or image
    return recording


@dataclass
class AugmentPlan:
    """What timm's training Compose does, read from it: the device applies it, the workers draw it."""

    size: int
    crop: RandomResizedCropAndInterpolation
    interpolation: str
    hflip: float
    rand_augment: RandAugment | None
    fill: tuple[int, int, int]  # RandAugment's geometric ops fill with the mean colour
    jitter: tv.ColorJitter | None
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    erasing: RandomErasing | None
    layers: int  # ops per item at most: RandAugment's, then ColorJitter's

    @classmethod
    def of(cls, transform: tv.Compose) -> "AugmentPlan":
        steps = {}
        for step in transform.transforms:
            kind = type(step)
            if kind not in (RandomResizedCropAndInterpolation, tv.RandomHorizontalFlip, RandAugment, tv.ColorJitter,
                            MaybeToTensor, tv.Normalize, RandomErasing):  # fmt: skip
                raise unsupported(f"the training transform {kind.__name__}")
            steps[kind] = step
        crop = steps.get(RandomResizedCropAndInterpolation)
        if crop is None or crop.size[0] != crop.size[1]:
            raise unsupported("a training transform without a square RandomResizedCrop")
        if isinstance(crop.interpolation, tuple | list):
            raise unsupported("data.interpolation=random")
        interpolation = crop.interpolation.value
        if interpolation not in INTERPOLATIONS:
            raise unsupported(f"data.interpolation={interpolation}")
        rand_augment = steps.get(RandAugment)
        fill = (128, 128, 128)
        if rand_augment is not None:
            names = sorted({op.name for op in rand_augment.ops} - set(RAND_AUGMENT_OPS))
            if names:
                raise unsupported(f"the RandAugment ops {names} (data.auto_augment)")
            op = rand_augment.ops[0]
            if PIL_INTERPOLATIONS.get(op.kwargs["resample"]) != interpolation:
                raise unsupported("RandAugment with a random interpolation")
            fill = tuple(op.kwargs["fillcolor"])
            rand_augment = copy.copy(rand_augment)
            rand_augment.ops = [recording_op(op) for op in rand_augment.ops]
        jitter = steps.get(tv.ColorJitter)
        if jitter is not None and jitter.hue is not None:
            raise unsupported("ColorJitter with hue")
        erasing = steps.get(RandomErasing)
        if erasing is not None and (erasing.rand_color or erasing.per_pixel or erasing.num_splits > 1):
            raise unsupported(f"random erasing mode {erasing.mode!r}")
        normalize = steps.get(tv.Normalize)
        return cls(
            size=crop.size[0],
            crop=crop,
            interpolation=interpolation,
            hflip=steps[tv.RandomHorizontalFlip].p if tv.RandomHorizontalFlip in steps else 0.0,
            rand_augment=rand_augment,
            fill=fill,
            jitter=jitter,
            mean=tuple(float(v) for v in normalize.mean) if normalize is not None else (0.0, 0.0, 0.0),
            std=tuple(float(v) for v in normalize.std) if normalize is not None else (1.0, 1.0, 1.0),
            erasing=erasing,
            layers=(rand_augment.num_layers if rand_augment is not None else 0) + (3 if jitter is not None else 0),
        )

    @property
    def erase_count(self) -> int:
        return self.erasing.max_count if self.erasing is not None else 0


def unsupported(what: str) -> ConfigError:
    return ConfigError(f"data.pipeline=device cannot apply {what} on the device; use data.pipeline=workers")


def draw(plan: AugmentPlan, width: int, height: int) -> dict:
    """One item's parameters, drawn with the global generators in the order timm's Compose draws them:
    crop (top, left, height, width), flip, the ops in the order applied (RandAugment's, then ColorJitter's;
    index in OP_KINDS, -1: none) with their level argument, the erased rectangles (height 0: none).
    Plain numbers: the collate function makes the batch's tensors (a tensor per item costs more than the draws)."""
    crop = plan.crop.get_params(
        torch.empty(0, height, width),
        plan.crop.scale,
        plan.crop.ratio,  # what get_params reads: the size
    )
    flip = plan.hflip > 0 and bool(torch.rand(1) < plan.hflip)
    recorder = Recorder()
    if plan.rand_augment is not None:
        plan.rand_augment(recorder)
    if plan.jitter is not None:  # torchvision's order of (brightness, contrast, saturation, hue): PIL's enhance ops
        j = plan.jitter
        order, *factors = tv.ColorJitter.get_params(j.brightness, j.contrast, j.saturation, j.hue)
        kinds = ("BrightnessIncreasing", "ContrastIncreasing", "ColorIncreasing")
        recorder.ops += [(kinds[k], (factors[k],)) for k in order.tolist() if k < 3 and factors[k] is not None]
    missing = plan.layers - len(recorder.ops)
    if plan.erasing is not None:
        plan.erasing._erase(recorder, 3, plan.size, plan.size, torch.float32)
    return {
        "crop": crop,
        "flip": flip,
        "op_index": [OP_KINDS.index(RAND_AUGMENT_OPS[name]) for name, _ in recorder.ops] + [-1] * missing,
        # float64, as timm's: a shear of 0.12 in float32 moves pixels across PIL's boundaries
        "op_arg": [float(args[0]) if args else 0.0 for _, args in recorder.ops] + [0.0] * missing,
        "erased": recorder.erased + [(0, 0, 0, 0)] * (plan.erase_count - len(recorder.erased)),
    }
