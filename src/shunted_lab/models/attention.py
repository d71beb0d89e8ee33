"""Opt-in attention weights for every token mixer: `with record_attention(model) as maps: model(x)`.

The mixers' fast path is fused SDPA, whose softmax never leaves the kernel. A mixer derived from
`RecordableAttention` calls `self.attend(...)`: with no recorder set (the default) that is exactly
SDPA; inside `record_attention` it is the explicit softmax(QK^T / sqrt(d) + mask) V, and the
weights go to the recorder as an `AttentionMap` that says where each query and key sit on the
stage's token grid. Outputs equal the fused path's to fp32 tolerance.

Memory: a recorder may reduce each map as soon as it is made (`keep=`), so that no block's N x N
matrix outlives its block: the analysis keeps a few query rows and a per-head distance only.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def explicit_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None = None, dropout_p: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(QK^T / sqrt(d) + mask) V and the softmax weights (B, heads, queries, keys)."""
    attn = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    if attn_mask is not None:
        attn = attn + attn_mask
    attn = attn.softmax(dim=-1)
    return F.dropout(attn, dropout_p) @ v, attn


@dataclass
class AttentionMap:
    """One attention call's weights and the geometry that places them on the stage's token grid.

    weights: (B, heads, N, K); row n is query token n of the H x W grid `hw`, in row-major order.
    Keys live on a grid `key_hw` whose cell (i, j) aggregates the query-grid cells
    [i*sh, (i+1)*sh) x [j*sw, (j+1)*sw), (sh, sw) = `key_stride` (fractional for adaptive pooling).
    Key k of every query is key-grid cell k, unless `key_index` (N, K) names, per query, the cell
    of each of its keys (swin's windows).
    `group` names one of several head groups of one layer (shunted: "rate 8", "rate 4").
    """

    weights: torch.Tensor
    hw: tuple[int, int]
    key_hw: tuple[int, int]
    key_stride: tuple[float, float] = (1, 1)
    key_index: torch.Tensor | None = None
    group: str = ""

    def query_positions(self) -> torch.Tensor:
        """(N, 2) row, column of each query on the token grid."""
        rows, cols = torch.meshgrid(torch.arange(self.hw[0]), torch.arange(self.hw[1]), indexing="ij")
        return torch.stack([rows.flatten(), cols.flatten()], dim=-1).float()

    def key_positions(self) -> torch.Tensor:
        """(K, 2), or (N, K, 2) with key_index: each key's centre in query-grid coordinates."""
        s = torch.tensor(self.key_stride, dtype=torch.float)
        rows, cols = torch.meshgrid(torch.arange(self.key_hw[0]), torch.arange(self.key_hw[1]), indexing="ij")
        centres = torch.stack([rows.flatten(), cols.flatten()], dim=-1) * s + (s - 1) / 2
        return centres if self.key_index is None else centres[self.key_index.cpu()]

    def mean_distance(self) -> torch.Tensor:
        """(heads,) attention-weighted query-key distance in tokens, averaged over images and queries.

        The statistic of the ViT paper (its Fig. 7), on this stage's grid: multiply by the stage's
        stride for pixels.
        """
        q = self.query_positions()
        k = self.key_positions()
        dist = (q[:, None] - (k if k.ndim == 3 else k[None])).norm(dim=-1)  # N, K
        w = self.weights.detach().float().cpu()
        return (w * dist).sum(-1).mean(dim=(0, 2))

    def key_grid(self, query: int) -> torch.Tensor:
        """(B, heads, *key_hw): the weights of one query spread over the key grid."""
        w = self.weights[:, :, query].detach().float().cpu()
        if self.key_index is None:
            return w.reshape(*w.shape[:2], *self.key_hw)
        grid = torch.zeros(*w.shape[:2], self.key_hw[0] * self.key_hw[1])
        grid.index_add_(2, self.key_index[query].cpu(), w)
        return grid.view(*w.shape[:2], *self.key_hw)


class RecordableAttention(nn.Module):
    """Base of the token mixers: `attend` is fused SDPA, or the recorded explicit softmax."""

    recorder: Callable[[AttentionMap], None] | None = None
    attn_drop: float = 0.0

    def attend(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        geometry: Callable[[torch.Tensor], AttentionMap] | None = None,
    ) -> torch.Tensor:
        """Attention over (B, heads, tokens, head_dim) q, k, v; `geometry` turns weights into an AttentionMap."""
        dropout = self.attn_drop if self.training else 0.0
        if self.recorder is None:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout)
        out, weights = explicit_attention(q, k, v, attn_mask, dropout)
        self.recorder(geometry(weights.detach()))
        return out


@contextmanager
def record_attention(model: nn.Module, keep: Callable[[str, AttentionMap], object] | None = None) -> Iterator[dict]:
    """Record every mixer's attention while the block runs: {mixer name: [what was kept, per call]}.

    `keep(name, amap)` returns what to store (default: the AttentionMap itself); it can reduce the
    map on the spot. Recording ends, and the fused path returns, when the block exits.
    """
    mixers = {name: m for name, m in model.named_modules() if isinstance(m, RecordableAttention)}
    if not mixers:
        raise ValueError(f"{type(model).__name__} has no RecordableAttention mixer to record")
    maps: dict[str, list] = {}

    def recorder_for(name: str) -> Callable[[AttentionMap], None]:
        return lambda amap: maps.setdefault(name, []).append(keep(name, amap) if keep else amap)

    try:
        for name, mixer in mixers.items():
            mixer.recorder = recorder_for(name)
        yield maps
    finally:
        for mixer in mixers.values():
            del mixer.recorder  # back to the class attribute: None, the fused path
