"""keep_freed_memory: freed large blocks stay in the process (no page faults on the next forward)."""

import subprocess
import sys
import textwrap

import pytest

PROBE = textwrap.dedent(
    """
    import sys
    from model_zoo.runtime import keep_freed_memory

    def rss_mib():
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024

    took = keep_freed_memory() if sys.argv[1] == "keep" else False
    before = rss_mib()
    block = bytearray(256 * 2**20)  # zero-filled: every page touched
    del block
    print(took, rss_mib() - before)
    """
)


def retained_mib(mode: str) -> tuple[bool, float]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True).stdout.split()
    return out[0] == "True", float(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_freed_blocks_stay_with_the_process() -> None:
    took, kept = retained_mib("keep")
    assert took is True
    assert kept > 200, f"only {kept:.0f} MiB of a freed 256 MiB block stayed"
    _, returned = retained_mib("default")
    assert returned < 50, f"without it glibc unmaps the block; {returned:.0f} MiB stayed"



ARENA_PROBE = textwrap.dedent(
    """
    import sys
    import threading
    from model_zoo.runtime import keep_freed_memory, malloc_heaps

    keep_freed_memory(int(sys.argv[1]))
    threads = int(sys.argv[2])
    together = threading.Barrier(threads)

    def decode_like():
        blocks = [bytearray(2**20) for _ in range(4)]  # heap blocks: keep_freed_memory turned mmap off
        together.wait()  # every thread alive at once, so none can take over another's arena

    workers = [threading.Thread(target=decode_like) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    heaps = malloc_heaps()
    print(heaps.arena_heaps, heaps.arena_kib)
    """
)


def other_arena_heaps(arenas: int, threads: int) -> tuple[int, int]:
    out = subprocess.run(
        [sys.executable, "-c", ARENA_PROBE, str(arenas), str(threads)], capture_output=True, text=True, check=True
    ).stdout.split()
    return int(out[0]), int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_every_thread_allocates_from_the_one_arena() -> None:
    # Kept memory is reusable by every thread only in one arena; in glibc's default each thread that
    # allocates makes its own arena (one 64 MiB heap each, up to 8 per core), whose freed blocks no
    # other thread ever gets: the service's RSS then creeps up (BENCHMARKS.md, soak.py).
    assert other_arena_heaps(arenas=1, threads=4) == (0, 0)
    heaps, resident_kib = other_arena_heaps(arenas=0, threads=4)
    assert heaps == 4 and resident_kib >= 4 * 4 * 1024  # each thread's 4 MiB in its own arena
