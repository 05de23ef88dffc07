"""TEST-ONLY fault injection for the node process (used by test/ros/test_faults.py).

A CUDA out-of-memory error cannot be provoked on a CPU-only test machine, so the tests ask the
node to simulate one: with the environment variable ``PSPNET_TEST_OOM_FRAME_ID`` set, every
frame whose ``header.frame_id`` equals its value raises ``torch.OutOfMemoryError`` inside the
engine, just before the forward pass (through ``RealtimeEngine(fault_hook=...)``), so the node's
real error path runs: frame counted as failed, logged, no output, next frames processed.

Unset (always, outside tests) it does nothing: :func:`fault_hook_from_env` returns None and the
engine runs without a hook. It is an environment variable rather than a node parameter so that
it can never appear in a parameters file or ``ros2 param list``.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Optional, Sequence

ENV_OOM_FRAME_ID = "PSPNET_TEST_OOM_FRAME_ID"


def fault_hook_from_env() -> Optional[Callable[[Sequence[Any]], None]]:
    frame_id = os.environ.get(ENV_OOM_FRAME_ID)
    if not frame_id:
        return None

    def inject_oom(items: Sequence[Any]) -> None:
        for item in items:
            header = getattr(getattr(item, "context", None), "header", None)
            if header is not None and header.frame_id == frame_id:
                import torch

                raise torch.OutOfMemoryError(
                    f"CUDA out of memory (simulated: frame_id {frame_id!r}, {ENV_OOM_FRAME_ID} is set)")

    return inject_oom
