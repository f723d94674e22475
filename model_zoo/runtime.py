"""Process-wide settings for fast CPU inference with a bounded memory footprint.

Every forward pass allocates fresh feature maps, the largest tens of MiB each (a stage-1 map of a
1333×800 image is 256 × 200 × 336 float32). glibc's malloc serves blocks that large with ``mmap``
and unmaps them on ``free``, so each forward page-faults its whole working set in again, a large
share of a CPU forward (BENCHMARKS.md has the figures). ``keep_freed_memory`` turns that off for
the process: large blocks come from the heap, and freed memory stays there for the next forward.
The process then keeps its peak footprint (what a caching allocator such as jemalloc or tcmalloc
would do).

Kept memory must also be *reusable* by whichever thread allocates next. glibc gives each thread
that allocates its own arena (up to 8 per core): the service's decoding threads, its batcher
thread and the model loader each fill a different one, and a block freed into one arena is never
handed to another. With nothing returned to the OS, the footprint becomes the sum of every
arena's peak, and fragmentation across their 64 MiB heaps makes it creep up with the requests;
worse, a heap of another arena that empties is unmapped whatever the trim threshold, so big
blocks page-fault in again. One arena for the whole process (``arenas=1``, the default) keeps the
footprint at its peak and the forwards free of page faults: the threads that share it allocate a
few large blocks per forward, not a stream of small ones, so they hardly contend for it.

Kept memory also makes a late free costly: memory that Python frees only at a full garbage
collection (a reference cycle) makes the heap grow meanwhile, and the heap keeps that peak. Code
that holds images or feature maps frees them by reference counting, never through a cycle.
``malloc_heaps`` reads where a process's malloc memory lives (``benchmarks/soak.py`` reports it),
and ``release_freed_memory`` gives the kept memory back, e.g. after a model is unloaded.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from dataclasses import dataclass
from pathlib import Path

# mallopt(3) parameters (glibc malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8
NEVER_TRIM = 2**31 - 1
ARENA_HEAP_BYTES = 64 * 2**20  # glibc's HEAP_MAX_SIZE on 64-bit: each heap of a non-main arena reserves this, aligned to it


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The process's C library when it is glibc (whose malloc the functions here tune), else None."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.gnu_get_libc_version  # only glibc has it: mallopt parameters differ elsewhere
    except (OSError, AttributeError):
        return None
    return libc


@functools.cache
def keep_freed_memory(arenas: int = 1) -> bool:
    """Make glibc's malloc never ``mmap`` a block nor return freed memory to the OS, and serve
    every thread from at most ``arenas`` arenas (0: glibc's default, 8 per core).

    Idempotent. Returns whether it took effect: False where the C library is not glibc (musl,
    macOS, Windows), which is left as it is. Call it before the first forward and before threads
    allocate: an arena that a thread already made stays in use.
    """
    if arenas < 0:
        raise ValueError(f"arenas must be >= 0 (0: glibc's default), got {arenas}")
    libc = _glibc()
    if libc is None:
        return False
    mallopt = libc.mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    took = mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, NEVER_TRIM) == 1
    return took and (arenas == 0 or mallopt(M_ARENA_MAX, arenas) == 1)


@dataclass(frozen=True)
class MallocHeaps:
    """Where a process's malloc memory lives (resident KiB)."""

    main_kib: int  # the main arena's heap, ``[heap]`` (grown with brk)
    arena_kib: int  # the heaps of every other arena
    arena_heaps: int  # how many such heaps (each arena has at least one)


def malloc_heaps(pid: int | str = "self") -> MallocHeaps:
    """Read :class:`MallocHeaps` of process ``pid`` from ``/proc/PID/smaps`` (Linux, glibc).

    A non-main arena's heap is told apart as glibc maps it: an anonymous mapping that starts at a
    multiple of :data:`ARENA_HEAP_BYTES` and whose read-write part is followed by the
    inaccessible rest of its reservation, up to that size.
    """
    mappings: list[tuple[int, int, str, str, int]] = []  # start, end, perms, name, rss KiB
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        fields = line.split()
        if "-" in fields[0] and len(fields) >= 5:  # a mapping's header: range perms offset dev inode [name]
            start, end = (int(part, 16) for part in fields[0].split("-"))
            mappings.append((start, end, fields[1], fields[5] if len(fields) > 5 else "", 0))
        elif fields[0] == "Rss:" and mappings:
            start, end, perms, name, _ = mappings[-1]
            mappings[-1] = (start, end, perms, name, int(fields[1]))
    main_kib = sum(rss for _, _, _, name, rss in mappings if name == "[heap]")
    arena_kib = arena_heaps = 0
    for index, (start, end, perms, name, rss) in enumerate(mappings):
        if name or not perms.startswith("rw") or start % ARENA_HEAP_BYTES:
            continue
        reserve_end = end
        if index + 1 < len(mappings):
            next_start, next_end, next_perms, next_name, _ = mappings[index + 1]
            if next_start == end and next_perms.startswith("---") and not next_name:
                reserve_end = next_end
        if reserve_end - start == ARENA_HEAP_BYTES:
            arena_kib += rss
            arena_heaps += 1
    return MallocHeaps(main_kib, arena_kib, arena_heaps)


def release_freed_memory() -> bool:
    """Give the memory malloc keeps (see :func:`keep_freed_memory`) back to the OS now, e.g. after
    a model was unloaded: glibc's ``malloc_trim(0)``. Returns whether anything was released;
    False where the C library is not glibc."""
    libc = _glibc()
    if libc is None:
        return False
    malloc_trim = libc.malloc_trim
    malloc_trim.argtypes, malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
    return malloc_trim(0) == 1
