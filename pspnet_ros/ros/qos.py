"""QoS profiles of the node and the ``qos_reliability: auto`` rule.

Input: keep last 1 (2 with the node's DYNAMIC Fast DDS readers, :func:`input_depth`), volatile,
so a slow node never builds a backlog in DDS; reliability either
forced or matched to the publishers. A reliable subscription does not match a best-effort
publisher at all, and a best-effort subscription to a reliable publisher loses fragments of large
images (1242x375 rgb8 over Fast DDS UDP: 2-4 of 10 frames arrive), so ``auto`` picks reliable
when every publisher offers it and best effort otherwise, the rule ``ros2 bag record`` uses.
"""

from __future__ import annotations

import os
from typing import Iterable, MutableMapping, Optional

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

RELIABLE = ReliabilityPolicy.RELIABLE
BEST_EFFORT = ReliabilityPolicy.BEST_EFFORT


def input_depth(environ: Optional[MutableMapping[str, str]] = None) -> int:
    """Return the camera subscriptions' history depth: 2 with the node's DYNAMIC readers, else 1.

    A Fast DDS reader at depth 1 evicts a large sample that is still arriving (fragment by
    fragment) as soon as the next one starts. With rmw's preallocated buffers that was rare; with
    DYNAMIC readers (middleware.py, the default) the node starved once the camera was faster than
    it (1242x375 rgb8, every output on, 2-core AMD EPYC, ``benchmarks/ros_bench.py --all-outputs``,
    2026-12-07; answers/s at 30/60/200 Hz: depth 1 29.7/12.3/0.8, depth 2 29.2/34.5/22.8, depth 4
    28.8/28.7/25.0 at ~15 ms more p50 latency; depths 1 and 4 with glibc's mmap threshold at
    32 MiB, depth 2 at the shipped 8 MiB, heap.py). The engine still keeps only the newest frame.
    """
    from .middleware import dynamic_readers

    return 2 if dynamic_readers(os.environ if environ is None else environ) else 1


def input_qos(reliability: ReliabilityPolicy) -> QoSProfile:
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=input_depth(), reliability=reliability,
                      durability=DurabilityPolicy.VOLATILE)


def output_qos() -> QoSProfile:
    """Reliable, small depth: reliable and best-effort subscribers (RViz) both match.

    Depth 5, not 1-2: under CPU load a reliable recorder (``ros2 bag record``) that falls a
    frame behind lost whole frames of one output with depth 2 (2 of 3 demo runs); 5 bounds the
    memory (a few frames) and the latency stays set by the input side, which keeps 1.
    """
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)


def latched_qos() -> QoSProfile:
    """Transient local depth 1: a late subscriber still gets the last message (class_info)."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


def camera_info_qos() -> QoSProfile:
    """Best effort, keep last 10.

    camera_info is tiny (no fragmentation), so best effort loses nothing and matches any
    publisher. Depth 10 keeps every message while the executor is busy: their stamps give the
    camera's real period for the input-loss count even when the keep-last-1 image queue
    replaces frames.
    """
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=BEST_EFFORT,
                      durability=DurabilityPolicy.VOLATILE)


def diagnostics_qos() -> QoSProfile:
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)


def forced_reliability(setting: str) -> Optional[ReliabilityPolicy]:
    """Return the policy for 'reliable'/'best_effort'; None for 'auto'."""
    return {"reliable": RELIABLE, "best_effort": BEST_EFFORT}.get(setting)


def matching_reliability(offered: Iterable[ReliabilityPolicy]) -> Optional[ReliabilityPolicy]:
    """Reliable if every publisher offers reliable, best effort if any does not, None if none.

    ``offered`` are the publishers' policies (``TopicEndpointInfo.qos_profile.reliability``).
    """
    offered = list(offered)
    if not offered:
        return None
    return RELIABLE if all(p == RELIABLE for p in offered) else BEST_EFFORT


def name(policy: ReliabilityPolicy) -> str:
    return "reliable" if policy == RELIABLE else "best_effort"
