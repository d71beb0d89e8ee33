"""glibc's allocator for work on the CPU: memory a step frees is kept for the next step.

glibc serves every allocation of 32 MiB or more (its highest mmap threshold) with a fresh mmap and
hands it back to the OS when it is freed, so the next step page-faults all of it in again. A CPU
step makes such tensors (at batch 128 the default run's stem makes 32 MiB maps; Shunted-S's stage-1
FFN, 51 MB tensors at batch 8). With mmap off and the heap's freed top kept, the next step reuses
the same pages: the default run takes 0.92 of the time, inference at its shape runs about 1.4x
faster, the scores are the same, and peak memory is about 13% higher (benchmarks/README.md, "On CPU
the allocator"). It replaced batch chunks inside the model's forward, which covered only the FFNs'
tensors and paid less.

Applied in every process of a run on the CPU (training/callbacks.py, KeepFreedMemoryOnCPU) and by
the bench on the CPU. A MALLOC_* variable of the user's own, or malloc tunables in GLIBC_TUNABLES,
leave glibc as the user set it: `MALLOC_PERTURB_=0` changes nothing, so it runs with glibc's
defaults for an A/B (MALLOC_MMAP_MAX_ or MALLOC_TOP_PAD_ would not: setting either freezes the
mmap threshold at 128 KiB).
"""

import ctypes
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # <malloc.h>
KEEP_BYTES = 2**31 - 1  # mallopt takes an int: keep up to 2 GiB of freed heap top


def set_by_user() -> bool:
    return any(name.startswith("MALLOC_") for name in os.environ) or "malloc" in os.environ.get("GLIBC_TUNABLES", "")


def keep_freed_memory() -> bool:
    """Large allocations from the heap, and its freed top kept, for this process and the workers it
    forks from now on. False where nothing changed: not glibc, or the user's own setting."""
    if not sys.platform.startswith("linux") or set_by_user():
        return False
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)  # glibc's; musl's exists and does nothing
    return mallopt is not None and bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, KEEP_BYTES))
