"""On the CPU, memory a step frees is kept for the next step: a large block allocated again is not
page-faulted in afresh (cpu_allocator.py); a user's own allocator setting is left as it is."""

import os
import subprocess
import sys

import pytest

# Allocate, touch and free 64 MiB twice; print the minor page faults of the second time.
SECOND_TIME_FAULTS = """
import ctypes, resource, sys
from shunted_lab.cpu_allocator import keep_freed_memory
print(keep_freed_memory())
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
size = 64 << 20
for _ in range(2):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    libc.free(ctypes.c_void_p(block))
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def second_time_faults(**env: str) -> tuple[str, int]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    out = subprocess.run(
        [sys.executable, "-c", SECOND_TIME_FAULTS], env=environ | env, capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_a_freed_large_block_is_reused_without_page_faults_unless_the_user_set_the_allocator():
    pages = (64 << 20) // os.sysconf("SC_PAGE_SIZE")
    kept, faults = second_time_faults()
    assert kept == "True" and faults < pages // 10, faults
    kept, faults = second_time_faults(MALLOC_PERTURB_="0")  # changes nothing: glibc maps and unmaps the block
    assert kept == "False" and faults > pages // 2, faults
