"""Token mixers. Each one maps (B, N, C) tokens and hw = (H, W) to (B, N, C).

A new variant is one file here (a class with that forward) plus one file in conf/attention/;
it can also live outside the package and be named by its import path.
"""

import inspect

from torch import nn

from ..layers import resolve_variant
from .pvt import SpatialReductionAttention
from .shunted import ShuntedAttention
from .swin import ShiftedWindowAttention
from .vit import GlobalAttention

MIXERS = {
    "vit": GlobalAttention,
    "pvt": SpatialReductionAttention,
    "swin": ShiftedWindowAttention,
    "shunted": ShuntedAttention,
}

# Per-block settings the backbone offers; a mixer receives those its constructor names.
STAGE_SETTINGS = ("sr_ratio", "window_size", "shift")


def build_mixer(name, dim: int, num_heads: int, stage_settings: dict, **kwargs) -> nn.Module:
    cls = resolve_variant("attention", name, MIXERS)
    accepted = inspect.signature(cls).parameters
    kwargs.update({k: v for k, v in stage_settings.items() if k in accepted})
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        allowed = sorted(set(accepted) - {"dim", "num_heads", *STAGE_SETTINGS})
        raise ValueError(f"attention option(s) {unknown} not accepted by {cls.__name__}; allowed: {allowed}")
    return cls(dim, num_heads, **kwargs)
