"""Image classification as a LightningModule, with the official Shunted recipe available.

AdamW (no weight decay on biases and 1-D parameters) with lr scaled by global batch / lr_base_batch,
a cosine schedule with linear warm-up stepped every iteration, label smoothing, Mixup/CutMix with
soft-target loss, and an optional EMA of the weights validated beside the model.
"""

import math

import lightning as L
import torch
import torch.nn.functional as F
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler
from timm.utils import ModelEmaV3
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from .metrics import GroupAccuracy


class ImageClassifier(L.LightningModule):
    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        *,
        # The recipe has one source, conf/optim/*.yaml (see its comments): no defaults here.
        lr: float,
        lr_base_batch: int,
        weight_decay: float,
        eps: float,
        betas: tuple[float, float],
        warmup_epochs: float,
        warmup_lr: float,
        min_lr: float,
        label_smoothing: float,
        mixup: float,
        cutmix: float,
        mixup_prob: float,
        mixup_switch_prob: float,
        ema_decay: float | None,
        fused: bool,
        channels_last: bool = False,
        compile: bool | str = False,
        group_names: list[str] | None = None,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["model"])
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        if compile:
            # Per block, in place (the state dict keeps its keys); a string is torch.compile's mode,
            # e.g. "reduce-overhead": CUDA graphs around every block, forward and backward.
            model.compile_blocks(**({} if compile is True else {"mode": compile}))
        self.model = model
        self.ema = ModelEmaV3(model, decay=ema_decay) if ema_decay else None
        if self.ema is not None:
            # timm leaves the copy in eval mode, which Lightning reports at every fit as modules in eval
            # mode; it only ever runs in validation, where Lightning switches every module to eval.
            self.ema.train()
        self.mixup = (
            Mixup(
                mixup_alpha=mixup,
                cutmix_alpha=cutmix,
                prob=mixup_prob,
                switch_prob=mixup_switch_prob,
                label_smoothing=label_smoothing,
                num_classes=num_classes,
            )
            if mixup > 0 or cutmix > 0
            else None
        )
        self.soft_loss = SoftTargetCrossEntropy()
        # train/loss_epoch: kept in every checkpoint, so a run resumed mid-epoch still reports the mean
        # over the whole epoch (Lightning's own epoch aggregate starts again empty).
        self.train_loss = MeanMetric(nan_strategy="disable")  # NonFiniteLossGuard stops a NaN; no sync per step
        self.train_loss.persistent(True)
        top_k = min(5, num_classes)
        self.metrics = nn.ModuleDict(
            {
                f"{split}_{name}": MulticlassAccuracy(num_classes, top_k=k, average="micro")
                for split in ("val", "test", *(("val_ema",) if ema_decay else ()))
                for name, k in (("top1", 1), ("top5", top_k))
            }
        )
        # val/top1_<group>, test/top1_<group> where the evaluation batches carry a group per image.
        self.group_metrics = nn.ModuleDict(
            {split: GroupAccuracy(group_names) for split in ("val", "test")} if group_names else {}
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        if self.hparams.compile == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()  # last step's CUDA-graph outputs may be overwritten
        if self.mixup is not None:
            x, soft = self.mixup(x, y)
            loss = self.soft_loss(self(x), soft)
        else:
            loss = F.cross_entropy(self(x), y, label_smoothing=self.hparams.label_smoothing)
        self.log("train/loss_step", loss, prog_bar=True, batch_size=len(x))
        self.train_loss.update(loss.detach(), len(x))
        self.log("train/loss_epoch", self.train_loss, on_step=False, on_epoch=True)
        return loss

    def on_train_epoch_start(self) -> None:
        # Lightning resets the mean when it logs it at the epoch's end, which comes after the checkpoint
        # saved at the validation's end: a run resumed from that checkpoint starts the epoch here.
        self.train_loss.reset()

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if self.ema is not None:
            self.ema.update(self.model, step=self.global_step)

    def _evaluate(self, batch, split: str, model: nn.Module) -> None:
        x, y, *groups = batch
        logits = model(x)
        if groups and split in self.group_metrics:
            self.group_metrics[split].update(logits, y, groups[0])
        loss = F.cross_entropy(logits, y)
        self.log(f"{split}/loss", loss, batch_size=len(x), on_epoch=True, sync_dist=True)
        for k in ("top1", "top5"):
            metric = self.metrics[f"{split}_{k}"]
            metric.update(logits, y)
            self.log(f"{split}/{k}", metric, on_epoch=True, prog_bar=k == "top1")

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, "val", self)
        if self.ema is not None:
            self._evaluate(batch, "val_ema", self.ema.module)

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, "test", self)

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

    def configure_optimizers(self):
        hp = self.hparams
        # Global batch = per-device batch x devices x nodes x accumulation; lr follows it linearly
        # (warm-up start and minimum lr are absolute, as in the official recipe).
        global_batch = (
            self.trainer.datamodule.batch_size * self.trainer.world_size * self.trainer.accumulate_grad_batches
        )
        lr = hp.lr * global_batch / hp.lr_base_batch
        optimizer = create_optimizer_v2(
            self.model,
            opt="adamw",
            lr=lr,
            weight_decay=hp.weight_decay,
            eps=hp.eps,
            betas=tuple(hp.betas),
            fused=hp.fused,
        )
        total = max(1, self.trainer.estimated_stepping_batches)
        steps_per_epoch = total / max(1, self.trainer.max_epochs or 1)
        warmup = min(total - 1, math.ceil(hp.warmup_epochs * steps_per_epoch))
        scheduler = CosineLRScheduler(
            optimizer,
            t_initial=total,
            lr_min=hp.min_lr,
            warmup_t=warmup,
            warmup_lr_init=hp.warmup_lr,
            t_in_epochs=False,
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def lr_scheduler_step(self, scheduler, metric) -> None:
        scheduler.step_update(num_updates=self.global_step)
