"""glibc's mmap threshold fixed for the node at 8 MiB (issue 24, pspnet_ros/ros/heap.py).

Larger buffers (a forged huge frame) leave RSS when freed, whatever came before; frame-sized
buffers (a 1242x375 or 1920x1080 rgb8 frame) are reused from the heap instead of being mapped
and page-faulted in once per frame (that cost the node a third of its throughput at 1 MiB).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from pspnet_ros.ros import heap

PROBE = textwrap.dedent("""
    import resource
    import sys
    from pspnet_ros.ros import heap

    def rss_mb():
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:")) / 1024

    mode = sys.argv[1]
    if mode != "dynamic":
        assert heap.fix_mmap_threshold()
    if mode == "frames":  # page faults while 50 frame-sized buffers are allocated and written
        frame, pins, faults = 1242 * 375 * 3, [], 0
        for i in range(51):
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            buf = b"\\2" * frame
            if i:  # the first one grows the heap
                faults += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
            pins.append(b"\\3" * (256 << 10))  # a live heap block after it, as in a busy process
            del buf
        print(faults)
        sys.exit(0)
    big = b"\\1" * (30 << 20)       # mapped, then freed: glibc's dynamic threshold rises to 30 MB
    del big
    before = rss_mb()
    frames = [b"\\2" * (10 << 20) for _ in range(3)]  # 30 MB of buffers above the fixed threshold
    pins = [b"\\3" * 200 for _ in range(1000)]        # small blocks after them: no heap-top trim
    del frames
    print(rss_mb() - before)
""")

pytestmark = pytest.mark.skipif(heap._glibc() is None, reason="glibc only (mallopt)")


def _probe(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return float(out.stdout)


def test_freed_large_buffers_leave_the_process():
    # Without the fixed threshold the 10 MB buffers come from the heap and stay there once freed.
    assert _probe("dynamic") > 16
    assert _probe("fixed") < 4


def test_frame_sized_buffers_are_reused_not_mapped_per_frame():
    # 50 buffers of 1.4 MB mapped per use would fault in ~341 pages each (~17,000 faults).
    assert heap.FRAME_BUFFER_BYTES >= 1920 * 1080 * 3
    faults = _probe("frames")
    assert faults < 2000, faults
