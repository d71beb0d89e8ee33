"""Image classification as a LightningModule on the shared recipe (recipe.py): label smoothing,
Mixup/CutMix with soft-target loss, top-1/top-5, and top-1 per group of images where the data
gives groups (SHAPES' object-size bins)."""

import torch.nn.functional as F
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from .metrics import GroupAccuracy
from .recipe import RecipeModule


class ImageClassifier(RecipeModule):
    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        *,
        group_names: list[str] | None = None,
        **recipe,
    ):
        super().__init__(model, **recipe)
        hp = self.hparams
        self.mixup = (
            Mixup(
                mixup_alpha=hp.mixup,
                cutmix_alpha=hp.cutmix,
                prob=hp.mixup_prob,
                switch_prob=hp.mixup_switch_prob,
                label_smoothing=hp.label_smoothing,
                num_classes=num_classes,
            )
            if hp.mixup > 0 or hp.cutmix > 0
            else None
        )
        self.soft_loss = SoftTargetCrossEntropy()
        top_k = min(5, num_classes)
        self.metrics = nn.ModuleDict(
            {
                f"{split}_{name}": MulticlassAccuracy(num_classes, top_k=k, average="micro")
                for split in ("val", "test", *(("val_ema",) if self.ema is not None else ()))
                for name, k in (("top1", 1), ("top5", top_k))
            }
        )
        # val/top1_<group>, test/top1_<group> where the evaluation batches carry a group per image.
        self.group_metrics = nn.ModuleDict(
            {split: GroupAccuracy(group_names) for split in ("val", "test")} if group_names else {}
        )

    def inputs_and_targets(self, batch):
        x, y = batch
        return self.mixup(x, y) if self.mixup is not None else (x, y)  # Mixup: soft targets, smoothed

    def criterion(self, logits, targets):
        if self.mixup is not None:
            return self.soft_loss(logits, targets)
        return F.cross_entropy(logits, targets, label_smoothing=self.hparams.label_smoothing)

    def evaluate(self, batch, split: str, model: nn.Module) -> None:
        x, y, *groups = batch
        logits = self.logits(model, x)
        if groups and split in self.group_metrics:
            self.group_metrics[split].update(logits, y, groups[0])
        loss = F.cross_entropy(logits, y)
        self.log(f"{split}/loss", loss, batch_size=len(x), on_epoch=True, sync_dist=True)
        for k in ("top1", "top5"):
            metric = self.metrics[f"{split}_{k}"]
            metric.update(logits, y)
            self.log(f"{split}/{k}", metric, on_epoch=True, prog_bar=k == "top1")

    def _log_groups(self, split: str) -> None:
        if split in self.group_metrics:
            metric = self.group_metrics[split]
            for name, value in metric.compute().items():  # already summed over processes
                self.log(f"{split}/{name}", value)
            metric.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_groups("val")

    def on_test_epoch_end(self) -> None:
        self._log_groups("test")
