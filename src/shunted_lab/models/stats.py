"""Cost figures reported everywhere: parameters and multiply-accumulates."""

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

# FlopCounterMode has formulas for the CUDA attention kernels only: SDPA's fused CPU kernel would
# count zero, and the published figures count attention's two matmuls.
CPU_ATTENTION_FLOPS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: (
        lambda q, k, v, *args, out_shape=None, **kwargs: sdpa_flop_count(q, k, v)
    )
}


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_gmacs(model: nn.Module, image_size: int | tuple[int, int], in_chans: int = 3) -> float:
    """GMACs for one image: FlopCounterMode's total / 2, as the published figures are counted."""
    hw = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    with FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION_FLOPS) as counter, torch.no_grad():
        model(torch.zeros(1, in_chans, *hw, device=device))
    model.train(was_training)
    return counter.get_total_flops() / 2e9
