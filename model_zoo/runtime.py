"""Process-wide settings for fast CPU inference.

Every forward pass allocates fresh feature maps of up to ~60 MiB each (1333×800 input). glibc's
malloc serves blocks that large with ``mmap`` and unmaps them on ``free``, so each forward
page-faults its whole working set in again. Measured on the 2-core AMD EPYC of BENCHMARKS.md that
is about a quarter of a CPU forward, for our detectors and for torchvision's alike.
``keep_freed_memory`` turns that off for the process: large blocks come from the heap, and freed
memory stays there for the next forward. The process then keeps its peak footprint (what a
caching allocator such as jemalloc or tcmalloc would do).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

# mallopt(3) parameters (glibc malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
NEVER_TRIM = 2**31 - 1


@functools.cache
def keep_freed_memory() -> bool:
    """Make glibc's malloc never ``mmap`` a block nor return freed memory to the OS.

    Idempotent. Returns whether it took effect: False where the C library is not glibc (musl,
    macOS, Windows), which is left as it is. Call it before the first forward.
    """
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # only glibc has it: mallopt parameters differ elsewhere
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, NEVER_TRIM) == 1


def release_freed_memory() -> bool:
    """Give the memory malloc keeps (see :func:`keep_freed_memory`) back to the OS now, e.g. after
    a model was unloaded: glibc's ``malloc_trim(0)``. Returns whether anything was released;
    False where the C library is not glibc."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        malloc_trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return False
    malloc_trim.argtypes, malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
    return malloc_trim(0) == 1
