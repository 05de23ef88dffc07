"""The node process: rclpy init, spin, signals, the log bridge and the exit codes.

Exit codes: 0 after SIGINT/SIGTERM or a shutdown, ``EXIT_STARTUP`` (2) when the node cannot start
with its configuration (:class:`StartupError`, logged without a traceback), ``EXIT_FATAL`` (3) when
the engine cannot process frames any more (:class:`FatalDeviceError`), the code the launch
file's respawn restarts on.
"""

from __future__ import annotations

import gc
import logging
import signal
import sys
import threading
from typing import Any, Callable, List, Optional

import rclpy
from rclpy.executors import ExternalShutdownException

from . import heap, middleware, shutdown

NODE_NAME = "segmentation_node"
EXIT_STARTUP = 2
EXIT_FATAL = 3


class StartupError(RuntimeError):
    """The node cannot start with this configuration; the message says why (no traceback)."""


class FatalDeviceError(RuntimeError):
    """The engine cannot process frames any more.

    A sticky CUDA error (the engine's error kind ``device_lost``), or too many consecutive
    failures: the node exits with EXIT_FATAL so that ``respawn=True`` restarts it.
    """


class _RosLogHandler(logging.Handler):
    """Forward the library's Python logging (engine, decoders) to the node's ROS logger.

    Those lines then reach /rosout and the console in ROS format instead of bare stderr.
    """

    def __init__(self, logger: Any) -> None:
        super().__init__(level=logging.INFO)
        self._logger = logger

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = f"[{record.name}] {record.getMessage()}"
            if record.levelno >= logging.ERROR:
                self._logger.error(msg)
            elif record.levelno >= logging.WARNING:
                self._logger.warning(msg)
            else:
                self._logger.info(msg)
        except Exception:  # noqa: BLE001 (logging must never take the node down)
            self.handleError(record)


def bridge_library_logging() -> None:
    """Send the library's Python logging (logger ``pspnet_ros``) to the node's ROS logger."""
    lib = logging.getLogger("pspnet_ros")
    if not any(isinstance(h, _RosLogHandler) for h in lib.handlers):
        lib.addHandler(_RosLogHandler(rclpy.logging.get_logger(NODE_NAME)))
        lib.setLevel(logging.INFO)
        lib.propagate = False


def _rcl_message(exc: BaseException) -> str:
    """Return rcl's error text without the ", at /file:line" trail it appends."""
    return str(exc).split(", at /")[0]


def spin(node: Any, executor: Any = None) -> int:
    """Spin like ``rclpy.spin(node)``, surviving a service response the middleware refuses.

    Such a response is logged (throttled) and the node keeps spinning
    (:func:`shutdown.is_refused_response`). Returns how many responses were refused.
    """
    executor = executor if executor is not None else rclpy.get_global_executor()
    executor.add_node(node)
    refused = 0
    try:
        while executor.context.ok():
            try:
                executor.spin_once()
            except Exception as exc:  # noqa: BLE001 - anything else propagates unchanged
                if not shutdown.is_refused_response(exc):
                    raise
                refused += 1
                rclpy.logging.get_logger(NODE_NAME).error(
                    f"a service response was not delivered ({refused} so far), the client gets no "
                    f"answer: {_rcl_message(exc)}", throttle_duration_sec=5.0)
    finally:
        executor.remove_node(node)
    return refused


def run(make_node: Callable[[], Any], argv: Optional[List[str]] = None) -> int:
    """Init rclpy, build the node with ``make_node()``, spin it; return the process exit code."""
    starting = True

    def sigterm_while_starting(signum: int, frame: Any) -> None:
        # rclpy turns SIGTERM into a context shutdown, which nothing notices while the model
        # loads (seconds, then a traceback from the dead context); during start-up, stop the way
        # SIGINT does. Afterwards rclpy's own handling (spin returns) applies.
        if starting:
            raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, sigterm_while_starting)  # installed first: rclpy chains to it
    # Memory under malformed input (issue 24): before init, Fast DDS readers and writers that free
    # each sample's buffer (readers as PSPNET_ROS_READER_MEMORY says, DYNAMIC by default); glibc's
    # mmap threshold fixed at 8 MiB (huge frames returned to the system when freed).
    try:
        middleware.configure_fastdds()
    except ValueError as exc:  # PSPNET_ROS_READER_MEMORY with an unknown value
        sys.stderr.write(f"[FATAL] [{NODE_NAME}]: cannot start: {exc}\n")
        return EXIT_STARTUP
    heap.fix_mmap_threshold()
    try:
        rclpy.init(args=argv if argv is not None else sys.argv)
    except RuntimeError as exc:  # rcl's RCLError: unreadable --params-file, bad --ros-args
        # rcl has already logged its own line; add one that says what to fix, without a traceback.
        sys.stderr.write(f"[FATAL] [{NODE_NAME}]: cannot start: {_rcl_message(exc)}\n")
        return EXIT_STARTUP
    bridge_library_logging()
    node: Any = None
    try:
        node = make_node()
        starting = False
        spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except StartupError as exc:
        rclpy.logging.get_logger(NODE_NAME).fatal(f"cannot start: {exc}")
        return EXIT_STARTUP
    except FatalDeviceError:
        return EXIT_FATAL  # already logged and published by the node
    except Exception as exc:  # noqa: BLE001 - only the executor noticing the shutdown ends here quietly
        if not shutdown.is_shutdown_race(exc, rclpy.ok()):
            # A bug, also when it coincides with SIGINT: its traceback, and a non-zero exit.
            rclpy.logging.get_logger(NODE_NAME).error(
                f"stopping on an unexpected error{'' if rclpy.ok() else ' during shutdown'}:\n"
                + shutdown.describe(exc))
            return 1
        # SIGINT/SIGTERM shut the context down between the executor's wait and its take of a
        # message (seen: rclpy's take_message raising RuntimeError). The node was stopping anyway.
        rclpy.logging.get_logger(NODE_NAME).info(
            f"stopped; the shutdown interrupted the executor ({type(exc).__name__}: {exc})")
    finally:
        # A repeated Ctrl-C (terminal and launch both signal the node) must not break teardown.
        shutdown.StopSignals.install()
        if node is not None:
            node.close()
        rclpy.try_shutdown()
        shutdown.StopSignals.install()  # rclpy's shutdown restores the handlers it replaced at init
        # All that is left is interpreter teardown, whose final garbage collections walk every
        # object torch created: 2.5-3.5 s after SIGINT/SIGTERM on a busy 2-core CPU, 0.6-0.8 s
        # with the heap frozen (nothing needs collecting any more). Keeps exit within 2 s.
        gc.freeze()
    return 0
