"""ViT's global multi-head self-attention: every token attends to every token of the stage."""

from functools import partial

import torch

from ..attention import AttentionMap
from ..layers import merge_heads
from .base import TokenMixer, register_mixer


@register_mixer("vit")
class GlobalAttention(TokenMixer):
    projections = "qkv"

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        x = self.attend(q, k, v, geometry=partial(AttentionMap, hw=hw, key_hw=hw))
        return self.proj_drop(self.proj(merge_heads(x)))
