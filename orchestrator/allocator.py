"""The C allocator's settings for a CPU training process: keep freed memory for the next step instead of unmapping it.

PyTorch's CPU tensors come straight from malloc/free. glibc hands the top of its heap back to the OS once more than
its trim threshold is free there, and serves large blocks from fresh mmaps; so each training step gave its activations
back at the end of backward and faulted them in again, page by page, in the next forward (measured on the 2-core CPU
box: 22-27k minor page faults per gptoss cpu-tiny step, about 100 MB, some 10% of the step). With fixed thresholds the
memory stays mapped and is reused (about 500 faults per step). Peak memory is unchanged (each step needs it again);
the process just does not shrink between steps, keeping at most TRIM_THRESHOLD of free heap.
"""

from __future__ import annotations

import ctypes
import sys

MMAP_THRESHOLD = 32 << 20  # blocks up to this size come from the heap (32 MiB: the most glibc accepts on 64-bit)
TRIM_THRESHOLD = 1 << 30  # free memory kept at the top of the heap before any is returned to the OS
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameter numbers from glibc's malloc.h


def keep_freed_memory() -> bool:
    """Set both thresholds in this process (glibc's mallopt). Returns whether they took; elsewhere a no-op."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the interpreter is linked against
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success; musl's is a stub that returns 0.
    return mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
