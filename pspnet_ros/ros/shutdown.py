"""How the node tells its own shutdown from a bug, and keeps a repeated Ctrl-C out of teardown.

ROS-free (the node passes the exception and whether its context is still up).

A SIGINT/SIGTERM shuts the rclpy context down between the executor's wait and its take of a
message; rclpy then raises from inside its executor (seen in CI: take_message's
``RuntimeError: Unable to convert call argument '0' to Python object``; rcl's "context is
invalid"; an ``InvalidHandle``). That, and only that, is the benign shutdown race. Anything else
that leaves ``rclpy.spin`` (another exception type or message, or one raised in this package's
own code, e.g. a callback) is a bug even while the node is stopping, and must keep its
traceback and a non-zero exit code.
"""

from __future__ import annotations

import signal
import threading
import traceback
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # pspnet_ros/
# Messages of the errors rclpy raises when the context goes away under a running executor.
SHUTDOWN_RACE_MESSAGES = ("unable to convert call argument", "context is invalid",
                          "context is not valid", "context was shutdown", "context has been shutdown")
SHUTDOWN_RACE_TYPES = ("RuntimeError", "RCLError", "InvalidHandle")
# The node's spin loop (process.spin, rclpy.spin's loop): its own frame sits between the caller
# and rclpy's executor and is not a callback of this package.
SPIN_FRAMES = {("process.py", "spin")}


def is_shutdown_race(exc: BaseException, context_ok: bool) -> bool:
    """Return whether ``exc`` (out of ``rclpy.spin``) is the executor noticing the shutdown.

    ``context_ok``: ``rclpy.ok()`` when it was caught. True only when the context is down, the
    exception is of a type and message rclpy raises then, and no frame below the caller's is
    in this package (a callback of ours that failed is a bug, whatever the context).
    """
    if context_ok:
        return False
    if not any(t.__name__ in SHUTDOWN_RACE_TYPES for t in type(exc).__mro__):
        return False
    text = str(exc).lower()
    if type(exc).__name__ != "InvalidHandle" and not any(m in text for m in SHUTDOWN_RACE_MESSAGES):
        return False
    frames = traceback.extract_tb(exc.__traceback__)[1:]  # [0]: the caller's own frame
    return not any(_in_package(f.filename) and (Path(f.filename).name, f.name) not in SPIN_FRAMES for f in frames)


def is_refused_response(exc: BaseException) -> bool:
    """Return whether ``exc`` (out of the executor) is the middleware refusing a service response.

    rclpy sends a service's response inside the executor; when Fast DDS refuses the write
    (rmw "failed to send response: cannot publish data", seen once in CI on Jazzy's Fast DDS 2.14
    during 30 lifecycle transitions, while a test leaked XML QoS into every process) the exception
    leaves ``spin``. The transition itself is done;
    only that client's answer is lost, so the node logs it and keeps serving.
    """
    return (any(t.__name__ == "RCLError" for t in type(exc).__mro__)
            and "failed to send response" in str(exc).lower())


def _in_package(filename: str) -> bool:
    try:
        return Path(filename).resolve().is_relative_to(PACKAGE_DIR)
    except (OSError, ValueError):
        return False


def describe(exc: BaseException) -> str:
    """Return the exception with its traceback, for an error log line."""
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip()


class StopSignals:
    """While the node tears down and the interpreter exits, SIGINT/SIGTERM are ignored.

    Ctrl-C on ``ros2 launch`` reaches the node twice (the terminal signals the whole process
    group, and launch forwards it). A ``KeyboardInterrupt`` from the second one in the middle of
    ``destroy_node`` turned a clean stop into a traceback; one during interpreter exit killed it
    (exit -2: Python restores the default action of signals that have a Python handler when it
    finalizes, but leaves ignored ones ignored). Teardown is bounded (the engine's stop has a
    timeout; launch escalates to SIGKILL anyway), so nothing is lost by ignoring them.
    """

    @staticmethod
    def install() -> None:
        """Ignore SIGINT/SIGTERM until the process ends (main thread only).

        Call it again after ``rclpy.shutdown``, which restores the handlers rclpy replaced at init.
        """
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, signal.SIG_IGN)
