"""The graph engine: the whole training step in one CUDA graph (`compile=cudagraphs`), and evaluation
in graphs.

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

What a graph reads must stay where it was captured, whatever Lightning does between steps:

- the optimizer owns the gradients: it keeps them and puts them back on the parameters before each
  step, so Lightning's `zero_grad(set_to_none=True)` before a validation frees nothing the graph writes;
- a graph checks the addresses of the tensors it reads (parameters, buffers, optimizer state) before
  each replay and is captured again when they moved (Lightning's teardown moves the module to the CPU
  and back; `task=eval` scores several splits);
- Lightning's hooks run outside the capture: `on_before_optimizer_step` before the replay (with the
  step before's gradients), and the backward runs without `on_before_backward`/`on_after_backward`;
- evaluation inputs whose shapes keep changing (folder datasets pad each batch to its largest
  image) run eagerly past `MAX_EVAL_SHAPES` captured shapes per module.

This module is torch's and timm's only (the benchmarks drive it without Lightning); `adapter.py`
adapts it to a LightningModule. On the CPU nothing is captured: the same code runs eagerly (buffers,
padding, the lr tensors, the kept gradients). That is how the tests check it against the plain step.
All graphs of a module share one memory pool; each graph's outputs are copied out before another
graph runs.
"""

import itertools
import logging
import time
from contextlib import contextmanager, nullcontext

import torch
from timm.optim import param_groups_weight_decay
from torch import nn

log = logging.getLogger(__name__)

MAX_EVAL_SHAPES = 4  # captured evaluation input shapes per module; more run eagerly


def addresses(tensors) -> tuple[int, ...]:
    """Where the tensors' data lives: a captured graph reads these addresses, and no others."""
    return tuple(t.data_ptr() for t in tensors)


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
        self.params = [p for g in self.param_groups for p in g["params"]]
        self.grads: list[torch.Tensor | None] | None = None  # the optimizer's own, from the first step on
        self.captured_at: tuple[int, ...] | None = None  # addresses the graph reads

    def _read_addresses(self) -> tuple[int, ...]:
        state = (t for p in self.params for t in self.state[p].values() if isinstance(t, torch.Tensor))
        return addresses(itertools.chain(self.params, state, self.lr_tensors))

    def _keep_gradients(self) -> None:
        """The gradients the steps write into, back on the parameters (a hook may have set them to None)."""
        if self.grads is None:
            return
        for i, (p, g) in enumerate(zip(self.params, self.grads, strict=True)):
            if p.grad is None and g is not None and g.device == p.device:
                p.grad = g
            elif p.grad is not None and p.grad is not g:  # moved with its parameter (module.to)
                self.grads[i] = p.grad

    def _update_lr_tensors(self) -> None:
        for tensor, group in zip(self.lr_tensors, self.param_groups, strict=True):
            tensor.fill_(float(group["lr"]))  # a kernel launch, no host sync

    def _run(self, loss_and_backward) -> torch.Tensor:
        """Zeroing, forward, loss, backward, clipping, update: what a capture records."""
        self._keep_gradients()
        self.zero_grad(set_to_none=False)  # gradients keep their storage: captured and eager steps share it
        with torch.enable_grad():
            loss = loss_and_backward()
        if self.grads is None:
            self.grads = [p.grad for p in self.params]
        if self.max_grad_norm:
            params = [p for p in self.params if p.grad is not None]
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

    def step(self, closure=None, *, loss_and_backward=None, graphed: bool = True) -> torch.Tensor:
        """One step of `loss_and_backward` (forward, loss, backward), captured and replayed. `closure`,
        when given, runs first and eagerly, outside any capture: Lightning's hooks (its optimizer
        wrapper passes them as the closure)."""
        if loss_and_backward is None:
            raise ValueError("GraphedAdamW.step needs loss_and_backward, the work it captures")
        if closure is not None:
            closure()
        self._update_lr_tensors()
        device_type = self.lr_tensors[0].device.type
        if self.graph is not None and graphed:
            if self._read_addresses() == self.captured_at:
                self.graph.replay()
                return self.static_loss.clone()  # the next replay overwrites it
            log.info("CUDA graphs: the parameters or optimizer state moved; the training step is captured again")
            self.graph, self.grads, self.warmed_up = None, None, 0
        context = self.graphs
        with uncached_autocast(device_type):
            if not graphed or not context.capture:
                return self._run(loss_and_backward)
            if self.warmed_up < self.eager_steps:
                with context.timed(), context.on_side_stream():
                    loss = self._run(loss_and_backward)
                self.warmed_up += 1
                return loss.clone()
            with context.timed():
                self.graph = torch.cuda.CUDAGraph()
                with context.capturing(self.graph):
                    self.static_loss = self._run(loss_and_backward)
                self.captured_at = self._read_addresses()
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
        # A checkpoint written without the graph mode saved capturable=False (and maybe fused=False);
        # the saved groups replace ours, and a capture needs both (the step counts on the device).
        groups = [{**g, "capturable": True, "fused": True} for g in state_dict["param_groups"]]
        super().load_state_dict({**state_dict, "param_groups": groups})


class GraphedForward:
    """Modules' forward in CUDA graphs, one per (module, input shape beyond the batch, dtype); a batch
    smaller than the captured one is padded with zeros and the padded rows' outputs dropped. A graph
    whose module's tensors moved is captured again; past `MAX_EVAL_SHAPES` shapes a module runs eagerly."""

    def __init__(self, graphs: GraphContext):
        self.context = graphs
        # key -> (graph or None, static input, static output, the addresses the graph reads)
        self.captured: dict[tuple, tuple] = {}
        self.eager_shapes_said = False

    def __call__(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        key = (id(module), tuple(x.shape[1:]), x.dtype, torch.is_grad_enabled())
        entry = self.captured.get(key)
        where = addresses(itertools.chain(module.parameters(), module.buffers()))
        if entry is None and sum(k[0] == id(module) for k in self.captured) >= MAX_EVAL_SHAPES:
            if not self.eager_shapes_said:
                log.info("CUDA graphs: more than %d evaluation input shapes; the others run eagerly", MAX_EVAL_SHAPES)
                self.eager_shapes_said = True
            return module(x)
        if entry is None or len(entry[1]) < len(x) or entry[3] != where:
            self.captured.pop(key, None)  # its graph and buffers go before the new capture allocates
            entry = self.captured[key] = (*self._capture(module, x), where)
        graph, static_in, static_out, _ = entry
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


def graphed_adamw(model: nn.Module, graphs: GraphContext, max_grad_norm: float | None, **adamw) -> GraphedAdamW:
    """GraphedAdamW over the parameter groups timm's create_optimizer_v2 makes (no weight decay on
    biases and 1-D parameters), as the eager recipe's AdamW has them."""
    skip = getattr(model, "no_weight_decay", set)()
    groups = param_groups_weight_decay(model, adamw["weight_decay"], no_weight_decay_list=skip)
    return GraphedAdamW(groups, graphs=graphs, max_grad_norm=max_grad_norm, **adamw)
