"""What every objective's LightningModule shares: the training recipe, with the official one available.

AdamW (no weight decay on biases and 1-D parameters) with lr scaled by global batch / lr_base_batch,
a schedule stepped every iteration after a linear warm-up (`cosine`, or `poly` as in the published
segmentation recipes), label smoothing and Mixup/CutMix (the classifier applies them; image mixing
has no per-pixel label, so a per-pixel objective refuses it), an optional EMA of the weights
validated beside the model, torch.compile of the backbone's blocks, channels-last inputs and the
epoch's mean training loss. A subclass gives `inputs_and_targets(batch)` and `criterion(logits,
targets)` for training and `evaluate(batch, split, model)` for validation and test; `logits(model,
x)` is the evaluation forward. In a graph mode (`compile=cudagraphs`) the module runs under manual
optimization and `graphs` (graphs/adapter.py) runs the step and the evaluation forward in CUDA graphs.
"""

import math

import lightning as L
import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler, PolyLRScheduler
from timm.utils import ModelEmaV3
from torch import nn
from torchmetrics import MeanMetric, Metric

from ..config import GRAPH_MODES
from .graphs.adapter import GraphedSteps

SCHEDULES = ("cosine", "poly")


class RecipeModule(L.LightningModule):
    per_pixel = False  # the labels are maps (segmentation)

    def __init__(
        self,
        model: nn.Module,
        *,
        # The recipe has one source, conf/optim/*.yaml (see its comments): no defaults here.
        lr: float,
        lr_base_batch: int,
        weight_decay: float,
        eps: float,
        betas: tuple[float, float],
        schedule: str,
        poly_power: float,
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
        max_grad_norm: float | None = None,  # the graph modes clip inside the graph (trainer.gradient_clip_val)
    ):
        super().__init__()
        if schedule not in SCHEDULES:
            raise ValueError(f"optim.schedule={schedule!r} is not allowed; expected one of {list(SCHEDULES)}")
        if self.per_pixel and (mixup > 0 or cutmix > 0):
            raise ValueError(
                f"optim.mixup={mixup}, optim.cutmix={cutmix}: image mixing has no per-pixel label; "
                "segmentation needs both 0"
            )
        self.save_hyperparameters(ignore=["model"])
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        # The EMA copies the model before any block is compiled, and compiles its own blocks below: a
        # deep copy of a compiled block loses its compiled forward (Module.__getstate__ drops it).
        self.ema = ModelEmaV3(model, decay=ema_decay) if ema_decay else None
        if self.ema is not None:
            # timm leaves the copy in eval mode, which Lightning reports at every fit as modules in eval
            # mode; it only ever runs in validation, where Lightning switches every module to eval.
            self.ema.train()
        if compile and compile != "cudagraphs-eager":
            # Per block, in place (the state dict keeps its keys); a string other than a graph mode is
            # torch.compile's mode, e.g. "max-autotune-no-cudagraphs".
            options = {} if compile is True or compile in GRAPH_MODES else {"mode": compile}
            for network in (model, *((self.ema.module,) if self.ema is not None else ())):
                network.compile_blocks(**options)
        self.model = model
        self.graphs = GraphedSteps(max_grad_norm) if compile in GRAPH_MODES else None
        # A graph replays backward and the update with the forward: Lightning must not run them.
        self.automatic_optimization = self.graphs is None
        # train/loss_epoch: kept in every checkpoint, so a run resumed mid-epoch still reports the mean
        # over the whole epoch (Lightning's own epoch aggregate starts again empty).
        self.train_loss = MeanMetric(nan_strategy="disable")  # NonFiniteLossGuard stops a NaN; no sync per step
        self.train_loss.persistent(True)

    def setup(self, stage: str) -> None:
        # Processes spawned on the CPU receive the module's tensors in shared memory; Lightning copies
        # the parameters and buffers out of it, not torchmetrics' states, so every rank would count
        # into one tensor. A reset gives each process states of its own.
        for metric in self.modules():
            if isinstance(metric, Metric):
                metric.reset()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x)

    def inputs_and_targets(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """A training batch as the network's input and the criterion's targets (Mixup applies here)."""
        raise NotImplementedError

    def criterion(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def logits(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """model(x) for evaluation."""
        return model(x) if self.graphs is None else self.graphs.logits(model, x)

    def evaluate(self, batch, split: str, model: nn.Module) -> None:
        raise NotImplementedError

    def training_step(self, batch, batch_idx):
        x, targets = self.inputs_and_targets(batch)
        if self.automatic_optimization:  # Lightning then runs backward, clipping and the update
            loss = self.criterion(self(x), targets)
        else:  # a graph mode: the whole step, replayed
            loss = self.graphs.training_step(self, x, targets)
        size = len(batch[0])
        self.log("train/loss_step", loss, prog_bar=True, batch_size=size)
        self.train_loss.update(loss.detach(), loss.new_full((), size))  # a Python int would be a host-to-device copy
        self.log("train/loss_epoch", self.train_loss, on_step=False, on_epoch=True)
        return loss

    def on_train_epoch_start(self) -> None:
        # Lightning resets the mean when it logs it at the epoch's end, which comes after the checkpoint
        # saved at the validation's end: a run resumed from that checkpoint starts the epoch here.
        self.train_loss.reset()

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if self.ema is not None:
            self.ema.update(self.model, step=self.global_step)

    def validation_step(self, batch, batch_idx):
        self.evaluate(batch, "val", self)
        if self.ema is not None:
            self.evaluate(batch, "val_ema", self.ema.module)

    def test_step(self, batch, batch_idx):
        self.evaluate(batch, "test", self)

    def configure_optimizers(self):
        hp = self.hparams
        # Global batch = per-device batch x devices x nodes x accumulation; lr follows it linearly
        # (warm-up start and minimum lr are absolute, as in the official recipe).
        global_batch = (
            self.trainer.datamodule.batch_size * self.trainer.world_size * self.trainer.accumulate_grad_batches
        )
        lr = hp.lr * global_batch / hp.lr_base_batch
        adamw = dict(lr=lr, weight_decay=hp.weight_decay, eps=hp.eps, betas=tuple(hp.betas))
        if self.graphs is None:
            optimizer = create_optimizer_v2(self.model, opt="adamw", fused=hp.fused, **adamw)
        else:
            optimizer = self.graphs.optimizer(self.model, **adamw)
        total = max(1, self.trainer.estimated_stepping_batches)
        steps_per_epoch = total / max(1, self.trainer.max_epochs or 1)
        warmup = min(total - 1, math.ceil(hp.warmup_epochs * steps_per_epoch))
        schedule = CosineLRScheduler if hp.schedule == "cosine" else PolyLRScheduler
        scheduler = schedule(
            optimizer,
            t_initial=total,
            lr_min=hp.min_lr,
            warmup_t=warmup,
            warmup_lr_init=hp.warmup_lr,
            t_in_epochs=False,
            **({"power": hp.poly_power} if hp.schedule == "poly" else {}),
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def lr_scheduler_step(self, scheduler, metric) -> None:
        """Every step: Lightning's call after each update, or the graph mode's (manual optimization)."""
        scheduler.step_update(num_updates=self.global_step)
