"""Where a CPU training step's time goes, op by op (`--op-times`)."""

import time
from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode


class OpTimer(TorchDispatchMode):
    """Wall time of every aten op. CPU ops run synchronously, so each time is the op's own."""

    def __init__(self):
        super().__init__()
        self.seconds = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        start = time.perf_counter()
        out = func(*args, **(kwargs or {}))
        name = str(func.overloadpacket)
        if func.overloadpacket in (torch.ops.aten.convolution, torch.ops.aten.convolution_backward):
            # The FFN's depth-wise convs and the stem's dense ones cost differently per FLOP.
            forward = func.overloadpacket is torch.ops.aten.convolution
            weight, groups = (args[1], args[8]) if forward else (args[2], args[9])
            name += " (depth-wise)" if groups > 1 and groups == weight.shape[0] else " (dense)"
        self.seconds[name] += time.perf_counter() - start
        return out


def op_times_ms(train_step, steps: int = 2) -> dict[str, float]:
    """Milliseconds per training step of every op, largest first (the timing adds some overhead)."""
    timer = OpTimer()
    with timer:
        for _ in range(steps):
            train_step()
    return {name: 1000 * s / steps for name, s in timer.seconds.most_common()}
