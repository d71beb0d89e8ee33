"""PVT's spatial-reduction attention: queries on all tokens, keys/values from a reduced map.

`linear=False` is PVTv1/v2 SRA (conv with kernel = stride = sr_ratio, then LayerNorm);
`linear=True` is PVTv2-li (adaptive average pool to 7x7, 1x1 conv, LayerNorm, GELU), whose cost
no longer grows with the square of the token count.
"""

from functools import partial

import torch
from torch import nn

from ..attention import AttentionMap
from ..layers import check_map_size, merge_heads, split_heads, to_map, to_tokens
from .base import TokenMixer, register_mixer


@register_mixer("pvt")
class SpatialReductionAttention(TokenMixer):
    projections = "q_kv"

    def __init__(self, dim: int, num_heads: int, sr_ratio: int = 1, linear: bool = False, **options):
        super().__init__(dim, num_heads, **options)
        if not isinstance(sr_ratio, int) or sr_ratio < 1:
            raise ValueError(f"sr_ratio={sr_ratio!r} is not allowed for pvt attention; expected an integer >= 1")
        self.sr_ratio = 1 if linear else sr_ratio
        self.linear = linear
        if linear:
            self.pool = nn.AdaptiveAvgPool2d(7)
            self.sr = nn.Conv2d(dim, dim, 1)
            self.norm = nn.LayerNorm(dim)
            self.act = nn.GELU()
        elif sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, sr_ratio)
            self.norm = nn.LayerNorm(dim)

    def reduce(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        if self.linear:
            return self.act(self.norm(to_tokens(self.sr(self.pool(to_map(x, hw))))))
        if self.sr_ratio > 1:
            check_map_size(hw, self.sr_ratio)
            return self.norm(to_tokens(self.sr(to_map(x, hw))))
        return x

    def key_map(self, weights: torch.Tensor, hw: tuple[int, int]) -> AttentionMap:
        if self.linear:  # adaptive pooling: cells of fractional size
            return AttentionMap(weights, hw, (7, 7), (hw[0] / 7, hw[1] / 7))
        r = self.sr_ratio
        return AttentionMap(weights, hw, (hw[0] // r, hw[1] // r), (r, r))

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        B, N, C = x.shape
        q = split_heads(self.q(x), self.num_heads)
        k, v = self.kv(self.reduce(x, hw)).view(B, -1, 2, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        x = self.attend(q, k, v, geometry=partial(self.key_map, hw=hw))
        return self.proj_drop(self.proj(merge_heads(x)))
