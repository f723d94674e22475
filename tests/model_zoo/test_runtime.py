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

