"""Swin's window attention: attention inside non-overlapping windows with a learned relative
position bias; blocks built with `shift=True` roll the map by half a window first, so that
information crosses window borders from one block to the next.

Maps that are not a multiple of the window are padded at the bottom/right; padded tokens are
masked out as keys (a padded query still sees itself, so no softmax row is empty). Shifting is
skipped when one window already covers a side of the map, as in Swin.

Loading weights trained with another window (another resolution) resamples the bias tables to this
module's window (`_load_from_state_dict`, resize_bias_table): the only weight of any mixer that
depends on the resolution.
"""

import logging
from functools import partial

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from torch import nn

from ..attention import AttentionMap, explicit_attention
from .base import TokenMixer, register_mixer

log = logging.getLogger(__name__)


def relative_position_index(window: int) -> torch.Tensor:
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return rel[..., 0] * (2 * window - 1) + rel[..., 1]


def resize_bias_table(table: torch.Tensor, window: int) -> torch.Tensor:
    """A ((2w-1)^2, heads) relative-position bias table for another window: the (2w-1) x (2w-1) grid of
    offsets per head, resampled bicubically to (2 * window - 1) per side, as timm's
    resize_rel_pos_bias_table_simple does for fine-tuning at another resolution. Offsets that land
    on a source offset keep its value, e.g. the zero offset at the centre."""
    side, heads = round(len(table) ** 0.5), table.shape[1]
    if side * side != len(table):
        raise ValueError(f"a relative position bias table of {len(table)} rows is not a square grid of offsets")
    grid = table.T.reshape(1, heads, side, side)
    new = 2 * window - 1
    grid = F.interpolate(grid.float(), size=(new, new), mode="bicubic", align_corners=False).to(table.dtype)
    return grid.reshape(heads, new * new).T.contiguous()


def partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, Hp, Wp, C) -> (B, num_windows, window * window, C)."""
    B, H, W, C = x.shape
    x = x.view(B, H // window, window, W // window, window, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(B, -1, window * window, C)


@register_mixer("swin")
class ShiftedWindowAttention(TokenMixer):
    projections = "qkv"

    def __init__(self, dim: int, num_heads: int, window_size: int = 7, shift: bool = False, **options):
        super().__init__(dim, num_heads, **options)
        if not isinstance(window_size, int) or window_size < 1:
            raise ValueError(f"window_size={window_size!r} is not allowed for swin attention; expected an integer >= 1")
        self.window_size = window_size
        self.shift = shift
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer("relative_position_index", relative_position_index(window_size), persistent=False)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        key = prefix + "relative_position_bias_table"
        table, want = state_dict.get(key), self.relative_position_bias_table.shape
        if table is not None and table.shape != want and table.ndim == 2 and table.shape[1] == want[1]:
            log.info("%s: %d offsets resized to window %d", key, len(table), self.window_size)
            state_dict[key] = resize_bias_table(table, self.window_size)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def attention_bias(self, hw: tuple[int, int], padded: tuple[int, int], shift: int) -> torch.Tensor:
        """(1, windows * heads, L, L): relative position bias plus -inf where a query must not see a key."""
        ws, device = self.window_size, self.relative_position_bias_table.device
        L = ws * ws
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(L, L, -1).permute(2, 0, 1)  # heads, L, L
        num_windows = (padded[0] // ws) * (padded[1] // ws)
        if not shift and padded == tuple(hw):
            return bias.repeat(num_windows, 1, 1).unsqueeze(0)
        # Label each position with its shift region (Swin's mask) and whether it is padding.
        region = torch.zeros(padded, device=device)
        if shift:
            cuts = (slice(0, -ws), slice(-ws, -shift), slice(-shift, None))
            for i, hs in enumerate(cuts):
                for j, wsl in enumerate(cuts):
                    region[hs, wsl] = 3 * i + j
        valid = torch.zeros(padded, dtype=torch.bool, device=device)
        valid[: hw[0], : hw[1]] = True
        valid = torch.roll(valid, (-shift, -shift), dims=(0, 1))
        region = partition(region[None, ..., None], ws)[0, ..., 0]  # windows, L
        valid = partition(valid[None, ..., None], ws)[0, ..., 0]
        allowed = (region[:, :, None] == region[:, None, :]) & valid[:, None, :]
        allowed |= torch.eye(L, dtype=torch.bool, device=device)
        mask = torch.zeros(allowed.shape, device=device).masked_fill(~allowed, float("-inf"))
        return (mask[:, None] + bias[None]).flatten(0, 1).unsqueeze(0)

    def attend(self, q, k, v, attn_mask=None, geometry=None) -> torch.Tensor:
        if self.recorder is None and attn_mask.requires_grad and q.device.type == "cpu":
            # PyTorch's CPU kernels cannot differentiate a mask, so SDPA would take its math path, whose
            # NaN-safe softmax made a Shunted-S-size training step 7% slower than this. Every row of the
            # mask keeps its own token, so the plain softmax is safe, and a window's map is only L x L.
            return explicit_attention(q, k, v, attn_mask, self.attn_drop if self.training else 0.0)[0]
        return super().attend(q, k, v, attn_mask, geometry)

    def window_map(self, weights: torch.Tensor, hw: tuple[int, int], padded: tuple[int, int], shift: int):
        """(B, windows * heads, L, L) -> each real query's weights over its window's keys, on the H x W grid."""
        (H, W), L, heads = hw, self.window_size**2, self.num_heads
        token = torch.full(padded, -1, dtype=torch.long)  # the token at each padded, shifted position
        token[:H, :W] = torch.arange(H * W).view(H, W)
        slots = partition(torch.roll(token, (-shift, -shift), dims=(0, 1))[None, ..., None], self.window_size)
        slots = slots.flatten()  # windows * L, -1 for padding
        weights = weights.view(weights.shape[0], -1, heads, L, L).transpose(1, 2).flatten(2, 3)
        keys = slots.view(-1, L).repeat_interleave(L, dim=0)  # each query's window keys
        real = (slots >= 0).nonzero().squeeze(1)
        pick = real[slots[real].argsort()].to(weights.device)  # queries in token order
        return AttentionMap(weights[:, :, pick], hw, hw, key_index=keys[pick.cpu()].clamp(min=0))

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        B, N, C = x.shape
        H, W = hw
        ws, heads = self.window_size, self.num_heads
        shift = ws // 2 if self.shift and min(H, W) > ws else 0
        Hp, Wp = H + (-H) % ws, W + (-W) % ws
        x = F.pad(x.view(B, H, W, C), (0, 0, 0, Wp - W, 0, Hp - H))
        if shift:
            x = torch.roll(x, (-shift, -shift), dims=(1, 2))
        windows = partition(x, ws)
        nw, L = windows.shape[1], windows.shape[2]
        # Windows and heads share one batch axis so that SDPA sees 4-D q/k/v and one broadcast mask.
        q, k, v = self.qkv(windows).view(B, nw, L, 3, heads, -1).permute(3, 0, 1, 4, 2, 5).flatten(2, 3)
        mask = self.attention_bias(hw, (Hp, Wp), shift).to(q.dtype)
        x = self.attend(q, k, v, mask, geometry=partial(self.window_map, hw=hw, padded=(Hp, Wp), shift=shift))
        x = x.view(B, Hp // ws, Wp // ws, heads, ws, ws, -1).permute(0, 1, 4, 2, 5, 3, 6).reshape(B, Hp, Wp, C)
        if shift:
            x = torch.roll(x, (shift, shift), dims=(1, 2))
        x = x[:, :H, :W].reshape(B, N, C)
        return self.proj_drop(self.proj(x))
