"""Which errors out of rclpy.spin are the node's own shutdown (pspnet_ros/ros/shutdown.py)."""

from __future__ import annotations

import pytest

from pspnet_ros.ros.shutdown import is_shutdown_race


def _raised(exc, in_package=False):
    """``exc`` with a traceback: [the caller's frame, then rclpy's or this package's]."""
    def inner():
        raise exc

    def from_package():  # a frame whose file is in pspnet_ros/: compiled with such a name
        code = compile("def f(g):\n    g()\n", __import__("pspnet_ros").__file__, "exec")
        ns = {}
        exec(code, ns)  # noqa: S102 (test helper: fabricates a package frame)
        ns["f"](inner)

    try:
        (from_package if in_package else inner)()
    except BaseException as e:  # noqa: BLE001
        return e


class InvalidHandle(Exception):
    pass


@pytest.mark.parametrize("exc", [
    RuntimeError("Unable to convert call argument '0' to Python object"),
    RuntimeError("rcl_take failed: subscription's context is invalid"),
    InvalidHandle("Tried to use a handle that has been destroyed."),
])
def test_the_known_race_is_benign_only_once_the_context_is_down(exc):
    assert is_shutdown_race(_raised(exc), context_ok=False)
    assert not is_shutdown_race(_raised(exc), context_ok=True)


@pytest.mark.parametrize("exc", [ValueError("teardown bug"), RuntimeError("out of memory"),
                                 AttributeError("'NoneType' object has no attribute 'publish'")])
def test_anything_else_is_a_bug_even_during_shutdown(exc):
    assert not is_shutdown_race(_raised(exc), context_ok=False)


def test_the_race_message_raised_from_our_own_code_is_a_bug():
    exc = RuntimeError("publisher's context is invalid")
    assert not is_shutdown_race(_raised(exc, in_package=True), context_ok=False)


class RCLError(RuntimeError):
    """Stands in for rclpy._rclpy_pybind11.RCLError (matched by name, as rclpy has no public import)."""


def test_a_refused_service_response_is_told_apart():
    from pspnet_ros.ros.shutdown import is_refused_response

    assert is_refused_response(RCLError("failed to send response: cannot publish data, at "
                                        "/project/src/rmw_response.cpp:165, at /project/src/rcl/service.c:400"))
    assert not is_refused_response(RCLError("Failed to publish: cannot publish data"))
    assert not is_refused_response(RuntimeError("failed to send response: cannot publish data"))


def test_the_race_through_the_nodes_spin_loop_is_still_benign():
    """process.spin sits between process.run and rclpy's executor: its frame is not a callback of ours."""
    from pathlib import Path

    import pspnet_ros

    process_py = str(Path(pspnet_ros.__file__).parent / "ros" / "process.py")

    def race():
        raise RuntimeError("rcl_take failed: subscription's context is invalid")

    def through(name):
        ns = {}
        exec(compile(f"def {name}(g):\n    g()\n", process_py, "exec"), ns)  # noqa: S102 (fabricated frame)
        try:
            ns[name](race)
        except RuntimeError as e:
            return e

    assert is_shutdown_race(through("spin"), context_ok=False)
    assert not is_shutdown_race(through("run_callback"), context_ok=False)
