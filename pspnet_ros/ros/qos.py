"""QoS profiles of the node and the ``qos_reliability: auto`` rule.

Input: keep last 1, volatile, so a slow node never builds a backlog in DDS; reliability either
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
    """Return the camera subscriptions' history depth: 1, or 4 with DYNAMIC readers.

    With ``PSPNET_ROS_READER_MEMORY=dynamic`` (middleware.py) a depth-1 reader fell far behind a
    reliable camera faster than the node (1242x375, every output on, 2-core CPU; answers/s at
    60/100/200 Hz: 3.0/0.3/0.2, the node's /diagnostics "in 1.8 Hz, lost 54.8/s"). Depth 2 gave
    13.0/3.8/0.7, depth 4 12.5/7.7/6.3 (rmw's reader policy at depth 1: 14.8/5.7/13.0). The engine
    still keeps only the newest frame; the cost is latency (p50 131 ms against ~90 at 60 Hz).
    """
    from .middleware import reader_memory

    return 4 if reader_memory(os.environ if environ is None else environ) == "dynamic" else 1


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
