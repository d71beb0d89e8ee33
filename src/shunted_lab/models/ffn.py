"""Feed-forward layers. Every FFN takes (B, N, C) tokens and the map size hw = (H, W)."""

from contextlib import nullcontext
from functools import partial
from inspect import signature

import torch
from torch import nn
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

from .layers import DWConv

_MATMULS = {torch.ops.aten.mm.default, torch.ops.aten.addmm.default}
# Recent PyTorch routes the tensors selective checkpointing keeps through the caller's saved-tensor
# hooks (save_on_cpu, the bench's memory count) like every other saved tensor, when asked to.
_SAC_HOOKS = (
    {"respect_saved_tensors_hooks": True} if "respect_saved_tensors_hooks" in signature(checkpoint).parameters else {}
)


def _keep_matmuls(ctx, op, *args, **kwargs) -> CheckpointPolicy:
    return CheckpointPolicy.MUST_SAVE if op in _MATMULS else CheckpointPolicy.PREFER_RECOMPUTE


class PlainMlp(nn.Module):
    """fc1 -> GELU -> fc2 (ViT, Swin).

    With `recompute`, everything between fc1 and fc2 is recomputed in the backward pass instead
    of kept: hidden tensors (4-8x the block's width) are most of a model's activation memory, and
    plain autograd keeps two to three of them per FFN (fc2's input, the GELU's input, the conv's
    input). Only fc1's output is kept; the matmul outputs are kept too, so fc2 never runs twice.
    Off by default: on an H100 it cost a third of a Shunted-S training step at batch 64, where
    memory was not binding (benchmarks/README.md). Turn it on when memory bounds the batch.
    """

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0, recompute: bool = False):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)
        self.recompute = recompute

    def activation(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        return self.act(x)

    def after_fc1(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.activation(x, hw))))

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        x = self.fc1(x)
        if not (self.recompute and torch.is_grad_enabled() and x.requires_grad):
            return self.after_fc1(x, hw)
        # Autocast caches a weight's low-precision copy for its whole region: a second forward in one
        # region (a caller's micro-batches) finds it cached but casts afresh when recomputed, a
        # mismatch that selective checkpointing refuses. Without the cache both passes cast.
        device = x.device.type
        autocast = (
            torch.autocast(device, dtype=torch.get_autocast_dtype(device), cache_enabled=False)
            if torch.is_autocast_enabled(device)
            else nullcontext()
        )
        context = partial(create_selective_checkpoint_contexts, _keep_matmuls)
        with autocast:
            return checkpoint(self.after_fc1, x, hw, use_reentrant=False, context_fn=context, **_SAC_HOOKS)


class DetailSpecificMlp(PlainMlp):
    """Shunted's FFN: fc1 -> GELU(x + DWConv3x3(x)) -> fc2; the residual keeps the point-wise path."""

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0, recompute: bool = False):
        super().__init__(dim, hidden_dim, drop, recompute)
        self.dwconv = DWConv(hidden_dim)

    def activation(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        return self.act(self.dwconv(x, hw, plus_input=True))


class DWConvMlp(DetailSpecificMlp):
    """PVTv2's FFN: fc1 -> DWConv3x3 -> GELU -> fc2, no residual around the conv."""

    def activation(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        return self.act(self.dwconv(x, hw))


FFNS = {"plain": PlainMlp, "detail_specific": DetailSpecificMlp, "dwconv": DWConvMlp}
