"""The whole training step in one CUDA graph (`compile=cudagraphs`), and evaluation in graphs.

Why: on the GPU a Shunted-S step is bound by the host. Its 19 narrow blocks launch thousands of
small kernels a step, and compiling them (fewer, faster kernels) leaves the host the bottleneck:
each compiled block still pays dynamo's guards and a Python launcher per kernel. A CUDA graph
replays the whole step, forward, loss, backward, clipping and the optimizer update, with one launch.
torch.compile's own graphs (mode="reduce-overhead") graph each compiled block apart, and a block's
output feeding the next block's graph is overwritten under no-grad (pytorch#160281); one explicit
capture of the whole step has no such seams.

Training, `GraphedAdamW.step(closure)`: the closure computes the loss of the batch in `StaticBatch`'s
buffers and calls backward. The first `eager_steps` steps run eagerly on the capture stream: lazy
optimizer state, cuDNN's autotuning and torch.compile's compilation happen there, never during a
capture. The next step is captured and replayed, and every later step is one replay. Whatever changes
between steps lives on the device: the batch in the static buffers, the learning rate in one tensor
per parameter group (the schedule's float is copied into it before each replay), Adam's step count
(capturable). The gradients keep their storage (zeroed in place inside the graph), so a batch of
another size, an epoch's last, runs eagerly through the same code on the same weights and optimizer
state. It is not captured, so nothing is ever recaptured.

Evaluation, `GraphedForward`: a module's forward is captured once per input shape. A smaller batch,
an evaluation's last, is padded with zeros to the captured size and the padded rows are dropped. In
eval mode rows do not interact, so the result is the unpadded one, and one graph serves every batch.

On the CPU nothing is captured: the same code runs eagerly (buffers, padding, the lr tensors). That
is how the tests check it against the plain step. All graphs of a module share one memory pool; each
graph's outputs are copied out before another graph runs.
"""

import logging
import time
from contextlib import contextmanager, nullcontext

import torch
from torch import nn

log = logging.getLogger(__name__)


class GraphContext:
    """What the graphs of one module share: the device, whether to capture (CUDA only), the memory
    pool, the side stream that warm-ups and captures run on, and the seconds they took."""

    def __init__(self, device: torch.device):
        self.device = device
        self.capture = device.type == "cuda"
        self.pool = torch.cuda.graph_pool_handle() if self.capture else None
        self.stream = torch.cuda.Stream(device) if self.capture else None
        self.setup_s = 0.0  # eager warm-up steps and captures, compilation included
        self.count = 0  # graphs captured

    @contextmanager
    def on_side_stream(self):
        """Eager warm-up work on the capture stream, ordered after and before the main stream's work."""
        if not self.capture:
            yield
            return
        main = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(main)
        with torch.cuda.stream(self.stream):
            yield
        main.wait_stream(self.stream)

    @contextmanager
    def capturing(self, graph: torch.cuda.CUDAGraph):
        # thread_local: the loader's pin-memory thread may allocate while the main thread captures.
        with torch.cuda.graph(graph, pool=self.pool, stream=self.stream, capture_error_mode="thread_local"):
            yield
        self.count += 1

    @contextmanager
    def timed(self):
        """Seconds into setup_s, the device's queued work included."""
        start = time.perf_counter()
        yield
        if self.capture:
            torch.cuda.synchronize(self.device)
        self.setup_s += time.perf_counter() - start


def uncached_autocast(device_type: str):
    """The autocast in force, without its cache of cast weights: casts cached during a capture would
    be graph memory that outlives it. Warm-up steps use it too, so that torch.compile's guards see the
    same state at warm-up and at capture."""
    if not torch.is_autocast_enabled(device_type):
        return nullcontext()
    return torch.autocast(device_type, dtype=torch.get_autocast_dtype(device_type), cache_enabled=False)


class StaticBatch:
    """The device buffers a captured step reads its batch from: allocated by the first batch, each later
    batch of the same shapes copied in. `load` answers whether the batch fits."""

    def __init__(self):
        self.tensors: tuple[torch.Tensor, ...] | None = None

    def load(self, *batch: torch.Tensor) -> bool:
        if self.tensors is None:
            self.tensors = tuple(t.clone() for t in batch)
            return True
        if any(t.shape != s.shape or t.dtype != s.dtype for t, s in zip(batch, self.tensors, strict=True)):
            return False
        for s, t in zip(self.tensors, batch, strict=True):
            s.copy_(t, non_blocking=True)
        return True


class GraphedAdamW(torch.optim.AdamW):
    """Fused AdamW whose `step(closure)`, closure included, is captured once in a CUDA graph and replayed.

    The closure must compute the same work on the same tensors at every call (StaticBatch's), except
    with `graphed=False`: that step runs eagerly on whatever the closure uses (an odd-sized batch).
    `max_grad_norm` clips the gradients' global norm inside the graph (no host sync)."""

    def __init__(
        self, params, *, graphs: GraphContext, eager_steps: int = 3, max_grad_norm: float | None = None, **adamw
    ):
        super().__init__(params, fused=True, capturable=True, **adamw)
        self.graphs, self.eager_steps, self.max_grad_norm = graphs, eager_steps, max_grad_norm
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static_loss: torch.Tensor | None = None
        self.warmed_up = 0
        device = self.param_groups[0]["params"][0].device
        # The fused CUDA kernel reads a tensor lr as a float32 (a float lr stays a double there: the updates
        # differ in the last bits); the CPU kernel reads it as a double, so there they are the plain step's.
        dtype = torch.float64 if device.type == "cpu" else torch.float32
        self.lr_tensors = [torch.tensor(float(g["lr"]), dtype=dtype, device=device) for g in self.param_groups]

    def _update_lr_tensors(self) -> None:
        for tensor, group in zip(self.lr_tensors, self.param_groups, strict=True):
            tensor.fill_(float(group["lr"]))  # a kernel launch, no host sync

    def _run(self, closure) -> torch.Tensor:
        """Zeroing, closure (forward, loss, backward), clipping, update: what a capture records."""
        self.zero_grad(set_to_none=False)  # gradients keep their storage: captured and eager steps share it
        with torch.enable_grad():
            loss = closure()
        if self.max_grad_norm:
            params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
            nn.utils.clip_grad_norm_(params, self.max_grad_norm, foreach=True)
        # The update reads the learning rate from the device; the schedule keeps writing floats.
        floats = [g["lr"] for g in self.param_groups]
        for group, tensor in zip(self.param_groups, self.lr_tensors, strict=True):
            group["lr"] = tensor
        try:
            super().step()
        finally:
            for group, lr in zip(self.param_groups, floats, strict=True):
                group["lr"] = lr
        return loss.detach()

    def step(self, closure=None, graphed: bool = True) -> torch.Tensor:
        if closure is None:
            raise ValueError("GraphedAdamW.step needs the closure that computes the loss")
        self._update_lr_tensors()
        device_type = self.lr_tensors[0].device.type
        if self.graph is not None and graphed:
            self.graph.replay()
            return self.static_loss.clone()  # the next replay overwrites it
        context = self.graphs
        with uncached_autocast(device_type):
            if not graphed or not context.capture:
                return self._run(closure)
            if self.warmed_up < self.eager_steps:
                with context.timed(), context.on_side_stream():
                    loss = self._run(closure)
                self.warmed_up += 1
                return loss.clone()
            with context.timed():
                self.graph = torch.cuda.CUDAGraph()
                with context.capturing(self.graph):
                    self.static_loss = self._run(closure)
                self.graph.replay()  # a capture records the step without running it
        log.info(
            "CUDA graphs: training step captured after %d eager steps (%.1f s with them, compilation included)",
            self.eager_steps,
            context.setup_s,
        )
        return self.static_loss.clone()

    def load_state_dict(self, state_dict: dict) -> None:
        if self.graph is not None:  # the graph reads the state tensors it was captured with
            raise RuntimeError("GraphedAdamW: load the optimizer state before the first step is captured")
        super().load_state_dict(state_dict)


class GraphedForward:
    """Modules' forward in CUDA graphs, one per (module, input shape beyond the batch, dtype); a batch
    smaller than the captured one is padded with zeros and the padded rows' outputs dropped."""

    def __init__(self, graphs: GraphContext):
        self.context = graphs
        self.captured: dict[tuple, tuple] = {}  # key -> (graph or None, static input, static output)

    def __call__(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        key = (id(module), tuple(x.shape[1:]), x.dtype, torch.is_grad_enabled())
        entry = self.captured.get(key)
        if entry is None or len(entry[1]) < len(x):
            entry = self.captured[key] = self._capture(module, x)
        graph, static_in, static_out = entry
        n = len(x)
        static_in[:n].copy_(x)
        static_in[n:].zero_()
        if graph is None:  # CPU: the same padding, run eagerly
            return module(static_in)[:n]
        graph.replay()
        return static_out[:n].clone()  # another replay overwrites it

    def _capture(self, module: nn.Module, x: torch.Tensor) -> tuple:
        context = self.context
        static_in = x.clone()
        if not context.capture:
            return None, static_in, None
        with uncached_autocast(x.device.type), context.timed():
            with context.on_side_stream():
                module(static_in)  # compiles, autotunes and allocates outside the capture
            graph = torch.cuda.CUDAGraph()
            with context.capturing(graph):
                static_out = module(static_in)
        log.info("CUDA graphs: evaluation forward captured for input %s", tuple(x.shape))
        return graph, static_in, static_out
