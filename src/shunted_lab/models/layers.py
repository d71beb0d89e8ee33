"""Small helpers shared by the token mixers and FFNs."""

import importlib

import torch
import torch.nn.functional as F
from torch import nn


def head_dim(dim: int, num_heads: int) -> int:
    if num_heads < 1 or dim % num_heads:
        raise ValueError(f"num_heads={num_heads} must be >= 1 and divide dim={dim}")
    return dim // num_heads


def to_map(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """(B, N, C) tokens in row-major order -> (B, C, H, W)."""
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], *hw)


def to_tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H*W, C)."""
    return x.flatten(2).transpose(1, 2)


def conv_plus_input(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """x + conv(x) for a same-size conv, as one conv whose centre tap is raised by one.

    The sum is then never a separate pass over x: forward and backward each save a read and a
    write of the tensor, and in the FFN that is the widest tensor of the block (hidden = 4-8x dim).
    """
    centre = torch.zeros_like(conv.weight[:1])
    centre[..., conv.kernel_size[0] // 2, conv.kernel_size[1] // 2] = 1
    return F.conv2d(x, conv.weight + centre, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)


class DWConv(nn.Module):
    """Depth-wise 3x3 conv over a token map (module path `dwconv.dwconv` as in the official release)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x: torch.Tensor, hw: tuple[int, int], plus_input: bool = False) -> torch.Tensor:
        """The conv of x, or with plus_input x + conv(x) (see conv_plus_input)."""
        x = to_map(x, hw)
        return to_tokens(conv_plus_input(self.dwconv, x) if plus_input else self.dwconv(x))


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per image, scale the kept ones by 1 / keep.

    The rate is a buffer, not a Python float: torch.compile guards on Python attributes, so float
    rates, one per block, made every block of a stage compile anew (dynamo's recompile limit was
    hit on Shunted-S). Non-persistent: state dicts stay those of the official release.
    """

    def __init__(self, rate: float):
        super().__init__()
        self.register_buffer("rate", torch.tensor(float(rate)), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        keep = 1 - self.rate
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"rate={self.rate.item():.3f}"


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, N, C) -> (B, heads, N, C // heads); channels are head-major, as in every reference model."""
    B, N, C = x.shape
    return x.view(B, N, num_heads, C // num_heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, heads, N, d) -> (B, N, heads * d)."""
    B, h, N, d = x.shape
    return x.transpose(1, 2).reshape(B, N, h * d)


def check_map_size(hw: tuple[int, int], ratio: int) -> None:
    if hw[0] < ratio or hw[1] < ratio:
        raise ValueError(
            f"token map {hw[0]}x{hw[1]} is smaller than sr_ratio={ratio}; use a larger input or a smaller sr_ratio"
        )


def resolve_variant(key: str, name, registry: dict):
    """A registered name, a class, or a dotted import path `package.module.Class`."""
    if isinstance(name, type):
        return name
    if name in registry:
        return registry[name]
    module, _, attr = str(name).rpartition(".")
    if module:
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError):
            pass
    raise ValueError(
        f"{key}={name!r} is not allowed; expected one of {sorted(registry)} or an importable 'module.Class'"
    )
