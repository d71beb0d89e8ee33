"""The graph engine (engine.py) as a LightningModule's training step, optimizer and evaluation forward.

Lightning's automatic optimization would run backward and the optimizer step itself, outside any
graph; the module runs under manual optimization in a graph mode (recipe.py), and this adapter's
`training_step` makes forward, loss, backward, clipping and the update one GraphedAdamW step over
StaticBatch's buffers. The schedule is then stepped by the module's own `lr_scheduler_step`, as
Lightning steps it in automatic optimization.
"""

import logging

import torch
from torch import nn

from .engine import GraphContext, GraphedAdamW, GraphedForward, StaticBatch, graphed_adamw

log = logging.getLogger(__name__)


class GraphedSteps:
    """A module's graphs: made on its device by the first call, made again if it moves."""

    def __init__(self, max_grad_norm: float | None):
        self.max_grad_norm = max_grad_norm
        self.context: GraphContext | None = None
        self.batch = StaticBatch()
        self.forward: GraphedForward | None = None

    def graphs(self, device: torch.device) -> GraphContext:
        if self.context is None or self.context.device != device:
            self.context = GraphContext(device)
            self.forward = None
            if not self.context.capture:
                log.info("graph mode on the %s: no CUDA graph is captured; the same step runs eagerly", device.type)
        return self.context

    def optimizer(self, model: nn.Module, **adamw) -> GraphedAdamW:
        return graphed_adamw(model, self.graphs(next(model.parameters()).device), self.max_grad_norm, **adamw)

    def training_step(self, module, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The loss of one whole step, replayed; the schedule stepped after it."""
        # A batch of other shapes (a loader's smaller last batch: ours drop it in training) runs
        # eagerly on the same weights and optimizer state.
        graphed = self.batch.load(x, targets)
        if graphed:
            x, targets = self.batch.tensors
        strategy = module.trainer.strategy

        def loss_and_backward():
            # The strategy's backward without Lightning's backward hooks, which would run inside the capture.
            loss = module.criterion(module(x), targets)
            strategy.pre_backward(loss)
            loss.backward()
            strategy.post_backward(loss)
            return loss

        loss = module.optimizers().step(loss_and_backward=loss_and_backward, graphed=graphed)
        module.lr_scheduler_step(module.lr_schedulers(), None)
        return loss

    def logits(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        context = self.graphs(x.device)
        if self.forward is None:
            self.forward = GraphedForward(context)
        return self.forward(model, x)
