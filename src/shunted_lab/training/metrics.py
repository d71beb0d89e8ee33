"""Top-1 accuracy within groups of the evaluated images: SHAPES' object-size bins, or the groups an
image folder's metadata file gives. An average over every image cannot show a claim about small
objects; these can."""

import torch
from torchmetrics import Metric


class GroupAccuracy(Metric):
    """top1_<group> and count_<group> for every group: correct / seen among its images, and how many
    it had. A group with no images has a count of 0 and no accuracy. States sum over processes."""

    full_state_update = False

    def __init__(self, names: list[str]):
        super().__init__()
        self.names = list(names)
        self.add_state("correct", torch.zeros(len(self.names), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", torch.zeros(len(self.names), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, logits: torch.Tensor, target: torch.Tensor, groups: torch.Tensor) -> None:
        hits = (logits.argmax(dim=-1) == target).long()
        self.correct.index_add_(0, groups, hits)
        self.total.index_add_(0, groups, torch.ones_like(hits))

    def compute(self) -> dict[str, torch.Tensor]:
        out = {}
        for i, name in enumerate(self.names):
            out[f"count_{name}"] = self.total[i].float()
            if self.total[i] > 0:
                out[f"top1_{name}"] = self.correct[i].float() / self.total[i]
        return out
