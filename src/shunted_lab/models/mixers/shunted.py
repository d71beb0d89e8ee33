"""Shunted self-attention (Ren et al., CVPR 2022), the seed's formulation on fused kernels.

With sr_ratio r > 1 the heads split into two halves: the first attends to keys/values aggregated
at rate r, the second at rate r / 2, so one layer sees two scales. Each branch aggregates tokens
with a strided conv -> LayerNorm -> GELU -> Linear whose output is laid out [K | V], and adds a
depth-wise 3x3 conv of V to V before attention (local enhancement). With r = 1 it is ordinary
attention, with the depth-wise conv of V added after attention.

Map sides not divisible by the rate are rounded down by the strided convs, exactly as in the
official code: the last rows/columns do not enter the aggregated K/V (queries still cover them).
"""

from functools import partial

import torch
from torch import nn

from ..attention import AttentionMap
from ..layers import check_map_size, conv_plus_input, split_heads, to_map, to_tokens
from .base import TokenMixer, register_mixer


@register_mixer("shunted")
class ShuntedAttention(TokenMixer):
    projections = "q"  # keys and values come from each scale's own aggregation, below

    def __init__(self, dim: int, num_heads: int, sr_ratio: int = 1, qkv_bias: bool = True, **options):
        super().__init__(dim, num_heads, qkv_bias=qkv_bias, **options)
        if not isinstance(sr_ratio, int) or not (sr_ratio == 1 or (sr_ratio >= 2 and sr_ratio % 2 == 0)):
            raise ValueError(
                f"sr_ratio={sr_ratio!r} is not allowed for shunted attention; expected 1 or an even integer >= 2"
            )
        if sr_ratio > 1 and num_heads % 2:
            raise ValueError(
                f"num_heads={num_heads} is not allowed for shunted attention with sr_ratio={sr_ratio}; "
                "expected an even number (the heads split into two scales)"
            )
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.act = nn.GELU()
            self.sr1 = nn.Conv2d(dim, dim, sr_ratio, sr_ratio)
            self.norm1 = nn.LayerNorm(dim)
            self.sr2 = nn.Conv2d(dim, dim, sr_ratio // 2, sr_ratio // 2)
            self.norm2 = nn.LayerNorm(dim)
            self.kv1 = nn.Linear(dim, dim, bias=qkv_bias)
            self.kv2 = nn.Linear(dim, dim, bias=qkv_bias)
            self.local_conv1 = nn.Conv2d(dim // 2, dim // 2, 3, 1, 1, groups=dim // 2)
            self.local_conv2 = nn.Conv2d(dim // 2, dim // 2, 3, 1, 1, groups=dim // 2)
        else:
            self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
            self.local_conv = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)

    def attend_tokens(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, hw, key_hw, rate: int) -> torch.Tensor:
        """q split into heads, k and v (B, keys, C) on a key grid aggregated at `rate`."""
        heads = q.shape[1]
        group = f"rate {rate}" if self.sr_ratio > 1 else ""
        geometry = partial(AttentionMap, hw=hw, key_hw=tuple(key_hw), key_stride=(rate, rate), group=group)
        return self.attend(q, split_heads(k, heads), split_heads(v, heads), geometry=geometry)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        B, N, C = x.shape
        q = split_heads(self.q(x), self.num_heads)
        if self.sr_ratio == 1:
            k, v = self.kv(x).chunk(2, dim=-1)
            local = to_tokens(self.local_conv(to_map(v, hw))).view(B, N, self.num_heads, -1)
            # Adding the head-major attention output through a transposed view merges heads in the same pass.
            x = (local + self.attend_tokens(q, k, v, hw, hw, 1).transpose(1, 2)).reshape(B, N, C)
            return self.proj_drop(self.proj(x))

        check_map_size(hw, self.sr_ratio)
        x_map = to_map(x, hw)
        half = self.num_heads // 2
        branches = (
            (q[:, :half], self.sr_ratio, self.sr1, self.norm1, self.kv1, self.local_conv1),
            (q[:, half:], self.sr_ratio // 2, self.sr2, self.norm2, self.kv2, self.local_conv2),
        )
        outs = []
        for q_half, rate, sr, norm, kv, local_conv in branches:
            reduced = sr(x_map)
            k, v = kv(self.act(norm(to_tokens(reduced)))).chunk(2, dim=-1)
            # At batch 1 the conv returns an NCHW map, whose tokens have strided channels: SDPA's fused
            # CPU kernel refuses those and falls back to an explicit softmax. Otherwise a no-op.
            v = to_tokens(conv_plus_input(local_conv, to_map(v, reduced.shape[-2:]))).contiguous()
            x_half = self.attend_tokens(q_half, k, v, hw, reduced.shape[-2:], rate)
            outs.append(x_half.transpose(1, 2))  # B, N, heads / 2, d
        # One copy merges both scales and the heads: [x1 | x2] channels, as in the seed.
        return self.proj_drop(self.proj(torch.cat(outs, dim=2).view(B, N, C)))
