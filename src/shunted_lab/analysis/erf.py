"""Effective receptive field (Luo et al., NeurIPS 2016; measured as in RepLKNet, CVPR 2022).

The ERF of an output location is the gradient of its features (summed over channels) with respect
to the input, in absolute value, summed over input channels and averaged over images. Its size is
reduced to RepLKNet's "high-contribution area ratio": the smallest square around that location's
input centre that holds a given share of the gradient's mass, as a fraction of the input area.
We take the raw mass (RepLKNet takes log10(1 + mass) first, which depends on the gradient's scale).
"""

from collections.abc import Callable

import torch

SHARES = (0.2, 0.5, 0.99)


def effective_receptive_fields(features: Callable[[torch.Tensor], list[torch.Tensor]], images: torch.Tensor):
    """For each NCHW output of `features(images)`: the (H, W) ERF map of its central location, summed over images."""
    x = images.detach().clone().requires_grad_(True)
    outputs = features(x)
    maps = []
    for i, f in enumerate(outputs):
        centre = f[:, :, f.shape[2] // 2, f.shape[3] // 2].sum()
        (grad,) = torch.autograd.grad(centre, x, retain_graph=i < len(outputs) - 1)
        maps.append(grad.abs().sum(dim=(0, 1)))
    return maps


def input_centre(output_hw: tuple[int, int], input_hw: tuple[int, int]) -> tuple[int, int]:
    """The input pixel under the central output location (h // 2, w // 2)."""
    return tuple(int((o // 2 + 0.5) * i / o) for o, i in zip(output_hw, input_hw, strict=True))


def area_ratio(erf: torch.Tensor, centre: tuple[int, int], share: float) -> tuple[float, int]:
    """(area ratio, side in pixels) of the smallest square about `centre` holding `share` of the mass."""
    H, W = erf.shape
    total = float(erf.sum())
    cy, cx = centre
    for r in range(max(H, W)):
        window = erf[max(cy - r, 0) : cy + r + 1, max(cx - r, 0) : cx + r + 1]
        if float(window.sum()) >= share * total * (1 - 1e-6):
            return window.numel() / (H * W), 2 * r + 1
    return 1.0, max(H, W)
