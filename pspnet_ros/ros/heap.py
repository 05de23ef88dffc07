"""glibc heap setting for the node's process: a fixed mmap threshold, 8 MiB.

Why (issue 24): glibc raises its mmap threshold to the size of the largest mmapped block freed
so far (up to 32 MB). After one large frame (a forged 8-megapixel JPEG, say) every later buffer
below that size comes from the heap arenas, and frames of changing sizes fragment them: measured
on the node with 25,000 mutated CompressedImages, RSS went 1,353 -> 1,446 MB, and
``malloc_trim(0)`` then gave 71 MB back, so that growth was freed memory glibc kept, not live
objects. A fixed threshold (no dynamic adjustment) stops that: larger buffers are mapped and
unmapped per use, smaller ones come from the heap.

Why 8 MiB, not 1 MiB (2026-12-07, 2-core AMD EPYC, ``benchmarks/ros_bench.py --rates 30,60,200
--all-outputs``, 1242x375 rgb8): at 1 MiB every frame-sized buffer (the camera sample in Fast
DDS, decoded images, outputs, serialized messages) was mapped, page-faulted in and unmapped once
per frame, and the node answered 20.8/17.3/15.3 fps (p50 73 ms); at 8 MiB 29.2/34.5/22.8 fps
(p50 45-56 ms), and Fast DDS' DYNAMIC readers (middleware.py) only keep up at all when their
per-sample buffer comes from the heap. 8 MiB holds a 1920x1080 rgb8 frame (6.2 MB); a forged
huge frame is still mapped and given back. Under hostile input the heap settles higher
(``benchmarks/fuzz.py``, 20,000 mutants, RSS after 5,000: compressed 1,239.5 MB at 1 MiB,
1,250.6 at 8 MiB, 1,313.8 at 32 MiB) and stays flat (+0.00 % / +0.09 %).

ROS-free; a no-op where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Optional

M_MMAP_THRESHOLD = -3  # glibc <malloc.h>
FRAME_BUFFER_BYTES = 8 << 20  # larger buffers are mapped per use and given back when freed


def _glibc() -> Optional[ctypes.CDLL]:
    try:
        libc = ctypes.CDLL(None)
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "gnu_get_libc_version") else None
    except OSError:
        return None


def fix_mmap_threshold(nbytes: int = FRAME_BUFFER_BYTES) -> bool:
    """Map every allocation of ``nbytes`` or more on its own (returned on free); True when set."""
    libc = _glibc()
    if libc is None:
        return False
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(libc.mallopt(M_MMAP_THRESHOLD, int(nbytes)))
