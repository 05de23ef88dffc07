"""glibc's mmap threshold fixed for the node (issue 24): freed frame-sized buffers leave RSS."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from pspnet_ros.ros import heap

PROBE = textwrap.dedent("""
    import sys
    from pspnet_ros.ros import heap

    def rss_mb():
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:")) / 1024

    if sys.argv[1] == "fixed":
        assert heap.fix_mmap_threshold()
    big = b"\\1" * (24 << 20)       # mapped, then freed: glibc's dynamic threshold rises to 24 MB
    del big
    before = rss_mb()
    frames = [b"\\2" * (4 << 20) for _ in range(6)]  # 24 MB of frame-sized buffers
    pins = [b"\\3" * 200 for _ in range(1000)]       # small blocks after them: no heap-top trim
    del frames
    print(rss_mb() - before)
""")


def _kept_mb(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return float(out.stdout)


@pytest.mark.skipif(heap._glibc() is None, reason="glibc only (mallopt)")
def test_freed_frame_buffers_leave_the_process():
    # Without the fixed threshold the 4 MB buffers come from the heap and stay there once freed.
    assert _kept_mb("dynamic") > 16
    assert _kept_mb("fixed") < 4
