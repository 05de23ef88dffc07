"""TEST-ONLY entry point: ``segmentation_node`` with a fault-injecting engine.

    python test/ros/fault_node.py [--oom-frame-id ID] [--fail-frame-id ID] --ros-args ...

The production node has no test seam but ``main(engine_factory=...)``: this script wraps the
default factory and gives the engine a ``fault_hook`` that, just before the forward pass,
raises ``torch.OutOfMemoryError`` for frames whose ``header.frame_id`` is ``--oom-frame-id``
(a CUDA OOM cannot be provoked on a CPU test machine), or a persistent RuntimeError for every
frame whose frame_id is ``--fail-frame-id`` (a device that fails every frame), so the node's
real error paths run. ``--slow-callback-ms`` makes every image callback that long (an executor
busy with other work), so a camera faster than that loses frames in the keep-last-1 input queue.
``--fail-spin after-shutdown|running`` spins one second, then raises RuntimeError from the spin
(as rclpy's take_message can when SIGINT shuts the context down between the executor's wait and
its take), after shutting the context down or with it still running; ``after-shutdown-other``
raises another error (a ValueError: a teardown bug) after shutting the context down.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Sequence

import rclpy

from pspnet_ros.ros import node


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--oom-frame-id", default=None)
    parser.add_argument("--fail-frame-id", default=None)
    parser.add_argument("--slow-callback-ms", type=float, default=0.0,
                        help="each submit sleeps this long in the image callback (a busy executor)")
    parser.add_argument("--fail-spin", choices=("after-shutdown", "running", "after-shutdown-other"),
                        default=None)
    args, ros_args = parser.parse_known_args(sys.argv[1:])
    if args.fail_spin:
        import time

        def failing_spin(n: Any) -> None:
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:
                rclpy.spin_once(n, timeout_sec=0.1)
            if args.fail_spin.startswith("after-shutdown"):
                rclpy.try_shutdown()
            if args.fail_spin == "after-shutdown-other":  # a teardown bug that coincides with SIGINT
                raise ValueError("simulated teardown bug")
            raise RuntimeError("simulated: Unable to convert call argument '0' to Python object")

        from pspnet_ros.ros import process

        process.spin = failing_spin  # what process.run calls

    def hook(items: Sequence[Any]) -> None:
        import torch

        for item in items:
            header = getattr(getattr(item, "context", None), "header", None)
            if header is None:
                continue
            if args.oom_frame_id and header.frame_id == args.oom_frame_id:
                raise torch.OutOfMemoryError(f"CUDA out of memory (simulated: frame_id {args.oom_frame_id!r})")
            if args.fail_frame_id and header.frame_id == args.fail_frame_id:
                raise RuntimeError(f"simulated persistent device failure (frame_id {args.fail_frame_id!r})")

    def factory(p, on_result, on_error):
        seg, engine = node.default_engine_factory(p, on_result, on_error)
        engine.fault_hook = hook
        if args.slow_callback_ms > 0:
            import time

            submit = engine.submit

            def slow_submit(*a: Any, **kw: Any) -> Any:
                time.sleep(args.slow_callback_ms / 1000.0)
                return submit(*a, **kw)

            engine.submit = slow_submit
        return seg, engine

    return node.main([sys.argv[0]] + ros_args, engine_factory=factory)


if __name__ == "__main__":
    sys.exit(main())
