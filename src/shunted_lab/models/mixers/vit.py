"""ViT's global multi-head self-attention: every token attends to every token of the stage."""

from functools import partial

import torch
from torch import nn

from ..attention import AttentionMap, RecordableAttention
from ..layers import head_dim, merge_heads


class GlobalAttention(RecordableAttention):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        head_dim(dim, num_heads)
        self.num_heads = num_heads
        self.attn_drop = attn_drop
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        x = self.attend(q, k, v, geometry=partial(AttentionMap, hw=hw, key_hw=hw))
        return self.proj_drop(self.proj(merge_heads(x)))
