"""Feed-forward layers. Every FFN takes (B, N, C) tokens and the map size hw = (H, W)."""

import torch
from torch import nn

from .layers import DWConv


class PlainMlp(nn.Module):
    """fc1 -> GELU -> fc2 (ViT, Swin)."""

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        x = self.drop(self.act(self.fc1(x)))
        return self.drop(self.fc2(x))


class DetailSpecificMlp(PlainMlp):
    """Shunted's FFN: fc1 -> GELU(x + DWConv3x3(x)) -> fc2; the residual keeps the point-wise path."""

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0):
        super().__init__(dim, hidden_dim, drop)
        self.dwconv = DWConv(hidden_dim)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        x = self.drop(self.act(self.dwconv(self.fc1(x), hw, plus_input=True)))
        return self.drop(self.fc2(x))


class DWConvMlp(DetailSpecificMlp):
    """PVTv2's FFN: fc1 -> DWConv3x3 -> GELU -> fc2, no residual around the conv."""

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        x = self.drop(self.act(self.dwconv(self.fc1(x), hw)))
        return self.drop(self.fc2(x))


FFNS = {"plain": PlainMlp, "detail_specific": DetailSpecificMlp, "dwconv": DWConvMlp}
