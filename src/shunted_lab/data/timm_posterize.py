"""timm's RandAugment as published, under Pillow 13.

The official recipe's `rand-m9-mstd0.5-inc1` draws PosterizeIncreasing with magnitude noise, which
asks for 0 bits on about 0.15% of draws (`4 - int(level / 10 * 4)` at level 10). Pillow before 13
returned a black image for 0 bits (its mask `~(2 ** 8 - 1)` keeps nothing); Pillow 13 raises
"bits must be between or equal to 1 and 8", which kills the loader worker and the run.

The fix is at the op, not a pin: a pin would hold every user to an old Pillow, and wrapping the
whole transform would hide other errors. `keep_timm_posterize` puts an op with Pillow 12's result
into timm's name-to-op table, which `AugmentOp` reads when a policy is built, so the policy, its
magnitudes and the distribution of its outputs stay timm's. Where Pillow accepts 0 bits, the op
gives the same image as before.
"""

from PIL import Image, ImageOps
from timm.data import auto_augment

POSTERIZE_OPS = ("Posterize", "PosterizeIncreasing", "PosterizeOriginal")


def timm_posterize(img: Image.Image, bits_to_keep: int, **_) -> Image.Image:
    """timm's posterize, where 0 bits (or fewer) keeps nothing: a black image, as Pillow < 13 gave."""
    if bits_to_keep >= 8:
        return img
    if bits_to_keep <= 0:
        return img.point(lambda _: 0)
    return ImageOps.posterize(img, bits_to_keep)


def keep_timm_posterize() -> None:
    """Point timm's posterize ops at `timm_posterize`; idempotent. Call before building a policy."""
    for name in POSTERIZE_OPS:
        if name in auto_augment.NAME_TO_OP:
            auto_augment.NAME_TO_OP[name] = timm_posterize
