"""Scores an average over every image cannot give: top-1 accuracy within groups of the evaluated
images (SHAPES' object-size bins, or the groups an image folder's metadata file gives), and the
segmentation scores with IoU per object size. A claim about small objects needs these."""

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


class SegmentationScores(Metric):
    """mIoU, pixel accuracy, IoU per class and mIoU per object-size bin, from confusion matrices
    summed over batches and processes (pixels labelled `ignore_index` count nowhere).

    - IoU of a class: TP / (TP + FP + FN) over every pixel; `miou` averages it over the classes that
      occur in the labels or the predictions (mmsegmentation's convention: a class absent from both
      has no IoU), and `iou_<class>` is reported for those classes.
    - `pixel_acc`: correct pixels / labelled pixels.
    - `miou_<bin>`: the same IoU computed over only the pixels of the objects in that size bin (the
      bin map gives each pixel its object's bin, -1 off any object), averaged over the classes that
      have labelled pixels there. A false positive counts where it falls on another object of the
      bin; background predicted on an object is a miss. The bins partition the objects, so every
      object pixel counts in exactly one bin. `pixels_<bin>` is how many pixels the bin had.
    """

    full_state_update = False

    def __init__(self, class_names: list[str], ignore_index: int, bin_names: list[str] | None = None):
        super().__init__()
        self.class_names, self.ignore_index = list(class_names), ignore_index
        self.bin_names = list(bin_names or [])
        k, b = len(self.class_names), len(self.bin_names)
        self.add_state("confmat", torch.zeros(k, k, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("bin_confmat", torch.zeros(b, k, k, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor, bins: torch.Tensor | None = None) -> None:
        """preds, target: (N, H, W) class indices; bins: (N, H, W) bin indices, -1 off any object."""
        k = len(self.class_names)
        labelled = target != self.ignore_index
        pairs = target.long() * k + preds.long()
        self.confmat += torch.bincount(pairs[labelled], minlength=k * k).view(k, k)
        if bins is not None and self.bin_names:
            on_object = labelled & (bins >= 0)
            cells = bins.long()[on_object] * k * k + pairs[on_object]
            self.bin_confmat += torch.bincount(cells, minlength=len(self.bin_names) * k * k).view(-1, k, k)

    @staticmethod
    def class_iou(confmat: torch.Tensor) -> torch.Tensor:
        """Per class (rows: label, columns: prediction): TP / (TP + FP + FN), NaN where that is 0 / 0."""
        tp = confmat.diag().double()
        union = confmat.sum(0) + confmat.sum(1) - confmat.diag()
        return tp / union.double()  # 0 / 0 = NaN: the class occurs nowhere

    def compute(self) -> dict[str, torch.Tensor]:
        iou = self.class_iou(self.confmat)
        out = {
            "miou": iou.nanmean().float(),
            "pixel_acc": (self.confmat.diag().sum() / self.confmat.sum().clamp_min(1)).float(),
        }
        out.update({f"iou_{name}": iou[i].float() for i, name in enumerate(self.class_names) if not iou[i].isnan()})
        for b, name in enumerate(self.bin_names):
            confmat = self.bin_confmat[b]
            out[f"pixels_{name}"] = confmat.sum().float()
            present = confmat.sum(1) > 0
            if present.any():
                out[f"miou_{name}"] = self.class_iou(confmat)[present].mean().float()
        return out
