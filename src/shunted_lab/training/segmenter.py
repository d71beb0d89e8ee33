"""Semantic segmentation as a LightningModule on the shared recipe (recipe.py): per-pixel cross-entropy
with an ignore index, and mIoU, pixel accuracy, IoU per class and per object-size bin
(metrics.SegmentationScores) for validation and test."""

import torch.nn.functional as F
from torch import nn

from .metrics import SegmentationScores
from .recipe import RecipeModule


class SemanticSegmenter(RecipeModule):
    per_pixel = True

    def __init__(
        self,
        model: nn.Module,
        class_names: list[str],
        ignore_index: int,
        *,
        group_names: list[str] | None = None,
        **recipe,
    ):
        super().__init__(model, **recipe)
        splits = ("val", "test", *(("val_ema",) if self.ema is not None else ()))
        self.scores = nn.ModuleDict({s: SegmentationScores(class_names, ignore_index, group_names) for s in splits})

    def inputs_and_targets(self, batch):
        return batch

    def criterion(self, logits, targets):
        return F.cross_entropy(
            logits, targets, ignore_index=self.hparams.ignore_index, label_smoothing=self.hparams.label_smoothing
        )

    def evaluate(self, batch, split: str, model: nn.Module) -> None:
        x, y, *bins = batch
        logits = self.logits(model, x)
        loss = F.cross_entropy(logits, y, ignore_index=self.hparams.ignore_index)
        self.log(f"{split}/loss", loss, batch_size=len(x), on_epoch=True, sync_dist=True)
        self.scores[split].update(logits.argmax(1), y, bins[0] if bins else None)

    def _log_scores(self, *splits: str) -> None:
        for split in splits:
            if split in self.scores:
                scores = self.scores[split]
                for name, value in scores.compute().items():  # summed over processes
                    self.log(f"{split}/{name}", value, prog_bar=name == "miou")
                scores.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_scores("val", "val_ema")

    def on_test_epoch_end(self) -> None:
        self._log_scores("test")
