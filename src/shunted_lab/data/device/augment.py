"""Decode and augment a training batch on the training device: data.pipeline=device.

The loader workers send each image's JPEG bytes and its drawn parameters (draws.py, encoded.py); this
module turns the batch into the tensor timm's `workers` pipeline would have made, on the GPU (on
the CPU where there is none, which is how the tests check it):

1. decode: `torchvision.io.decode_jpeg` on the batch's list (nvJPEG's batched decode on CUDA).
   What it cannot decode (not an RGB JPEG: PNG, CMYK, greyscale) was decoded by the worker, with
   PIL as the `workers` pipeline does, and is counted. A file that fails here is a DataError naming
   it, or, with data.skip_bad_images, its slot takes another image of the batch and is counted: the
   batch keeps its shape (the graph modes need it).
2. crop and resize, per image (the images differ in size): torch's antialiased bilinear/bicubic
   resize, which follows PIL's filters. One resize kernel per image.
3. everything else batched, with per-sample parameters: the flip; each layer of ops (RandAugment's,
   then ColorJitter's, whose brightness, contrast and saturation are PIL's enhance ops again) sorts
   the batch by op (the order and the counts come with the batch, from the workers: no host sync)
   and runs each op once on its slice; normalization; random erasing.

The images stay uint8 between ops, rounded or truncated as PIL rounds or truncates, so that each op
gives PIL's result: exactly for the point ops, the blends and the geometric ops (PIL's affine filters
and its autocontrast table, written out in its own float64 arithmetic), within a grey level for the
resize (tests/test_device_augment.py states the tolerances).
torchvision's v2 functional does equalize; the ops with a
per-sample parameter are written here on torch (torchvision's take one parameter per call; kornia
takes per-sample parameters but not PIL's semantics, e.g. its posterize and sharpness differ).
"""

import logging

import PIL
import torch
import torch.nn.functional as F
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms.v2 import functional as TF

from ...exits import DataError
from .draws import OP_KINDS, AugmentPlan

log = logging.getLogger(__name__)


def column(values: torch.Tensor) -> torch.Tensor:
    return values.view(-1, 1, 1, 1)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Truncated to uint8, as PIL's blends and point ops store their float results."""
    return x.clamp(0, 255).to(torch.uint8)


def luma(x: torch.Tensor) -> torch.Tensor:
    """PIL's RGB -> L: (R 19595 + G 38470 + B 7471 + 2^15) >> 16, as int32 (B, 1, H, W)."""
    r, g, b = x.int().unbind(1)
    return ((r * 19595 + g * 38470 + b * 7471 + 32768) >> 16).unsqueeze(1)


def blend(degenerate: torch.Tensor, image: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL's ImageEnhance: Image.blend(degenerate, image, factor) per sample."""
    degenerate = degenerate.float()  # PIL blends in float32
    return to_uint8(degenerate + column(factor.float()) * (image.float() - degenerate))


def color(x, factor):
    return blend(luma(x).expand_as(x), x, factor)


def contrast(x, factor):
    mean = (luma(x).double().mean((1, 2, 3)) + 0.5).floor()  # int(ImageStat mean + 0.5)
    return blend(column(mean).expand_as(x), x, factor)


def brightness(x, factor):
    return blend(torch.zeros_like(x), x, factor)


SMOOTH = torch.tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13


def sharpness(x, factor):
    """PIL's ImageFilter.SMOOTH (3x3, borders kept) as the degenerate image."""
    kernel = SMOOTH.to(x.device).expand(3, 1, 3, 3)
    smooth = (F.conv2d(x.float(), kernel, groups=3) + 0.5).floor()
    degenerate = x.clone()
    degenerate[..., 1:-1, 1:-1] = smooth.to(torch.uint8)
    return blend(degenerate, x, factor)


def posterize(x, bits):
    shift = (8 - bits.clamp(0, 8)).to(torch.int32)
    mask = ((255 << shift) & 255).to(torch.uint8)
    return x & column(mask)


def solarize(x, threshold):
    return torch.where(x.float() >= column(threshold), 255 - x, x)


def solarize_add(x, add):
    return torch.where(x < 128, to_uint8(x.float() + column(add)), x)


def pil_filter(values: list[torch.Tensor], d: torch.Tensor) -> torch.Tensor:
    """PIL's interpolation of neighbours `values` at fraction d, in its own arithmetic (Geometry.c): bilinear
    a + (b - a) d; bicubic (a = -1) as a polynomial in d of the values, not as weights times values, whose
    sum falls under 1 in float64 and takes a flat level k to k - 1e-13, truncated to k - 1."""
    if len(values) == 2:
        a, b = values
        return a + (b - a) * d
    v1, v2, v3, v4 = values
    p2, p3, p4 = -v1 + v3, 2 * (v1 - v2) + v3 - v4, -v1 + v2 - v3 + v4
    return v2 + d * (p2 + d * (p3 + d * p4))


def pil_affine(x: torch.Tensor, matrix: torch.Tensor, fill: torch.Tensor, mode: str) -> torch.Tensor:
    """PIL's Image.transform(size, AFFINE, matrix, resample, fillcolor) per sample: matrix (B, 2, 3)
    maps an output point to its input point, in pixels with pixel centres at +0.5. A point outside
    the image takes the fill colour; inside, PIL's filter reads edge-clamped neighbours, interpolates
    each row, then the column of row results, and truncates. Written out as gathers (16 for bicubic),
    since grid_sample's cubic differs; in float64 as PIL computes, since a truncated result moves by a
    level where float32 rounds across it."""
    n, c, h, w = x.shape
    rows, cols = torch.meshgrid(
        torch.arange(h, device=x.device, dtype=torch.float64) + 0.5,
        torch.arange(w, device=x.device, dtype=torch.float64) + 0.5,
        indexing="ij",
    )
    m = matrix.double().view(n, 6, 1, 1).unbind(1)
    px, py = m[0] * cols + m[1] * rows + m[2], m[3] * cols + m[4] * rows + m[5]
    fx, fy = px - 0.5, py - 0.5
    x0, y0 = fx.floor(), fy.floor()
    dx, dy = (fx - x0).unsqueeze(1), (fy - y0).unsqueeze(1)
    offsets = range(-1, 3) if mode == "bicubic" else range(2)
    columns = [(x0 + d).clamp(0, w - 1).long() for d in offsets]
    flat = x.double().reshape(n, c, h * w)

    def neighbour(row: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
        return flat.gather(2, (row + col).view(n, 1, h * w).expand(n, c, h * w)).view(n, c, h, w)

    row_results = []
    for d in offsets:
        row = (y0 + d).clamp(0, h - 1).long() * w
        row_results.append(pil_filter([neighbour(row, col) for col in columns], dx))
    out = pil_filter(row_results, dy)
    outside = ((px < 0) | (px >= w) | (py < 0) | (py >= h)).unsqueeze(1)
    return to_uint8(torch.where(outside, fill.view(1, c, 1, 1).double(), out))


def auto_contrast(x: torch.Tensor) -> torch.Tensor:
    """PIL's ImageOps.autocontrast: per image and channel, int(v * 255 / (hi - lo) - lo * 255 / (hi - lo))
    in float64 (its look-up table), clamped; a channel with one level is kept."""
    lo, hi = x.amin((2, 3), keepdim=True).double(), x.amax((2, 3), keepdim=True).double()
    scale = 255.0 / (hi - lo).clamp_min(1)
    stretched = (x.double() * scale + -lo * scale).trunc().clamp(0, 255).to(torch.uint8)
    return torch.where(hi > lo, stretched, x)


def rotation(degrees: torch.Tensor, size: int) -> torch.Tensor:
    """PIL's Image.rotate matrix about the centre: input = R (output - c) + c, R for -degrees."""
    angle = -torch.deg2rad(degrees.double())
    cos, sin = torch.cos(angle), torch.sin(angle)
    centre = size / 2
    rows = [cos, sin, centre - cos * centre - sin * centre, -sin, cos, centre + sin * centre - cos * centre]
    return torch.stack(rows, 1).view(-1, 2, 3)


def affine_matrix(kind: str, arg: torch.Tensor, size: int) -> torch.Tensor:
    if kind == "rotate":
        return rotation(arg, size)
    one, zero = torch.ones_like(arg), torch.zeros_like(arg)
    rows = {
        "shear_x": (one, arg, zero, zero, one, zero),
        "shear_y": (one, zero, zero, arg, one, zero),
        "translate_x_rel": (one, zero, arg * size, zero, one, zero),
        "translate_y_rel": (one, zero, zero, zero, one, arg * size),
    }[kind]
    return torch.stack(rows, 1).view(-1, 2, 3)


PIL_VERTICAL_FIRST = int(PIL.__version__.split(".")[0]) >= 13


def pil_passes(height: int, width: int, size: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """The intermediate and final shapes of PIL's two-pass resize to (size, size): horizontal first,
    except (Pillow 13) where the height shrinks by more than twice what the width does."""
    shrink_h, shrink_w = height - size, width - size
    if PIL_VERTICAL_FIRST and shrink_h > 0 and shrink_h > 2 * shrink_w:
        return (size, width), (size, size)
    return (height, size), (size, size)


GEOMETRIC = ("rotate", "shear_x", "shear_y", "translate_x_rel", "translate_y_rel")
POINT_OPS = {
    "auto_contrast": lambda x, _: auto_contrast(x),
    "equalize": lambda x, _: TF.equalize(x),
    "invert": lambda x, _: 255 - x,
    "posterize": posterize,
    "solarize": solarize,
    "solarize_add": solarize_add,
    "color": color,
    "contrast": contrast,
    "brightness": brightness,
    "sharpness": sharpness,
}


class DeviceAugment:
    """The `workers` pipeline's training transform for a whole EncodedBatch, on `device`."""

    def __init__(self, plan: AugmentPlan, skip_bad_images: bool = False):
        self.plan = plan
        self.skip_bad_images = skip_bad_images
        self.worker_decoded = 0  # images the workers decoded (not RGB JPEGs)
        self.bad_skipped = 0
        self.images = 0

    def __call__(self, batch, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        images = self.decode(batch, device)  # first: a bad file's slot takes another image's label and box
        params = {k: v.to(device, non_blocking=True) for k, v in batch.params.items()}
        x = self.crop(images, batch.params["crop"].tolist(), device)
        x = torch.where(column(params["flip"]), x.flip(-1), x)
        for layer, counts in enumerate(batch.op_counts):
            x = self.op_layer(x, params, counts, layer)
        mean = torch.tensor(self.plan.mean, device=device).view(1, 3, 1, 1)
        std = torch.tensor(self.plan.std, device=device).view(1, 3, 1, 1)
        x = (x.float() / 255 - mean) / std
        if self.plan.erase_count:
            x = self.erase(x, params["erased"])
        self.images += len(x)
        return x, batch.labels.to(device, non_blocking=True)

    def decode(self, batch, device: torch.device) -> list[torch.Tensor]:
        """Each image as uint8 (3, H, W) on `device`: JPEG bytes decoded there, the workers' pixels moved."""
        data = batch.data
        encoded = [i for i, item in enumerate(data) if item.dim() == 1]
        self.worker_decoded += len(data) - len(encoded)
        images = [item.to(device, non_blocking=True) if item.dim() == 3 else None for item in data]
        if encoded:
            try:
                decoded = decode_jpeg([data[i] for i in encoded], mode=ImageReadMode.RGB, device=device)
            except RuntimeError:  # one bad file fails the batched call: find it
                decoded = [self.decode_one(data[i], batch.paths[i], device) for i in encoded]
            for i, image in zip(encoded, decoded, strict=True):
                images[i] = image
        bad = [i for i, image in enumerate(images) if image is None]
        if bad:
            good = next((i for i, image in enumerate(images) if image is not None), None)
            if good is None:
                raise DataError(f"no image of a training batch could be decoded (e.g. {batch.paths[bad[0]]})")
            for i in bad:  # another image of the batch, with its label: the batch keeps its shape
                images[i] = images[good]
                batch.labels[i] = batch.labels[good]
                batch.params["crop"][i] = batch.params["crop"][good]
        return images

    def decode_one(self, data: torch.Tensor, path: str, device: torch.device) -> torch.Tensor | None:
        try:
            return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
        except RuntimeError as e:
            if not self.skip_bad_images:
                raise DataError(
                    f"cannot decode image {path}: {e} (set data.skip_bad_images=true to skip such files)"
                ) from e
            self.bad_skipped += 1
            log.warning("skipping undecodable image %s (%d so far)", path, self.bad_skipped)
            return None

    def crop(self, images: list[torch.Tensor], boxes: list[list[int]], device: torch.device) -> torch.Tensor:
        size = self.plan.size
        out = torch.empty(len(images), 3, size, size, dtype=torch.uint8, device=device)
        for k, (image, (top, left, h, w)) in enumerate(zip(images, boxes, strict=True)):
            region = image[None, :, top : top + h, left : left + w].float()
            for shape in pil_passes(h, w, size):  # PIL's two passes, each rounded to uint8
                region = F.interpolate(region, shape, mode=self.plan.interpolation, antialias=True)
                region = (region + 0.5).floor().clamp(0, 255)
            out[k] = region[0]
        return out

    def op_layer(self, x: torch.Tensor, params: dict, counts: list[int], layer: int) -> torch.Tensor:
        """The `layer`-th op of each sample (RandAugment's, then ColorJitter's): the batch sorted by op
        (`counts`: how many of each, in OP_KINDS order, then those without), each op run once on its
        slice, then put back in order."""
        order = params["op_order"][:, layer]
        sorted_x, args = x[order], params["op_arg"][order, layer]
        fill = torch.tensor(self.plan.fill, dtype=torch.float32, device=x.device)
        outs, start = [], 0
        for kind, count in zip(OP_KINDS, counts, strict=False):
            part, arg = sorted_x[start : start + count], args[start : start + count]
            if count and kind in GEOMETRIC:
                mode = self.plan.interpolation
                part = pil_affine(part, affine_matrix(kind, arg, self.plan.size), fill, mode)
            elif count:
                part = POINT_OPS[kind](part, arg)
            outs.append(part)
            start += count
        outs.append(sorted_x[start:])
        out = torch.empty_like(x)
        out[order] = torch.cat(outs)
        return out

    def erase(self, x: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """timm's RandomErasing, mode const: each drawn rectangle set to 0 (after normalization)."""
        size = self.plan.size
        rows = torch.arange(size, device=x.device).view(1, size, 1)
        cols = torch.arange(size, device=x.device).view(1, 1, size)
        for k in range(boxes.shape[1]):
            top, left, h, w = (column(boxes[:, k, i])[:, 0] for i in range(4))
            inside = (rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)
            x = x.masked_fill(inside.unsqueeze(1), 0.0)
        return x


def log_counts(augment: DeviceAugment) -> None:
    if augment.worker_decoded or augment.bad_skipped:
        log.info(
            "data.pipeline=device: of %d training images, %d were decoded by the workers (not RGB JPEGs), %d skipped",
            augment.images,
            augment.worker_decoded,
            augment.bad_skipped,
        )
