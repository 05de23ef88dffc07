"""The managed node's cleanup: every path releases everything, and configure starts afresh.

In-process: the lifecycle node runs in this process on its own rclpy Context and domain with a
fake engine (the node's ``engine_factory`` seam), and the transitions are triggered directly
(``trigger_configure`` ...), so each check takes a fraction of a second. What the tests rely on
is what a user sees: after a failed transition (``on_error``) no camera callback runs against
the released publishers; a cleanup -> configure forgets the failures of the released engine; a
``diagnostics_period`` set while unconfigured takes effect.
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any, List

import numpy as np
import pytest

import rclpy  # noqa: F401  (the ROS layer must run: a missing rclpy is an error, not a skip)
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

from pspnet_ros.ros.node import SegmentationLifecycleNode  # noqa: E402
from pspnet_ros.ros.process import FatalDeviceError  # noqa: E402
from ros_harness import domain_id_for, image_msg, reliable_qos  # noqa: E402


class FakeSegmenter:
    """The model side the node reads; ``fail_palette_read = n`` makes the n-th palette read raise.

    The node reads the palette for each camera's class_info in activate, so with two cameras
    and ``n = 2`` activate fails after subscribing the first camera (-> on_error).
    """

    classes = ["road", "other"]
    meta: dict = {}
    model_name, device, inference_size = "fake", "cpu", (32, 32)

    def __init__(self) -> None:
        self.palette_reads = 0
        self.fail_palette_read = 0

    @property
    def palette(self) -> np.ndarray:
        self.palette_reads += 1
        if self.palette_reads == self.fail_palette_read:
            raise RuntimeError("simulated: activate broke half-way")
        return np.zeros((2, 3), np.uint8)


class FakeEngine:
    """Accepts frames and answers nothing."""

    def __init__(self, on_result: Any, on_error: Any) -> None:
        self.on_result, self.on_error = on_result, on_error
        self.submitted = 0
        self.stopped = False

    def start(self) -> None:
        pass

    def submit(self, *args: Any, **kwargs: Any) -> bool:
        self.submitted += 1
        return True

    submit_encoded = submit

    def flush(self, timeout: float) -> bool:
        return True

    def stop(self, timeout: float = 2.0) -> None:
        self.stopped = True

    def stats(self) -> dict:
        return {"device": "cpu"}

    def update(self, **kwargs: Any) -> None:
        pass


def engine_error(kind: str) -> Any:
    """Build what the engine hands ``on_error``: kind, error and the frame's context (none here)."""
    return SimpleNamespace(kind=kind, error=RuntimeError(f"simulated {kind}"), context=None)


@pytest.fixture
def ros(request):
    """(node, engines, helper node, executor) on a private context; everything released after."""
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain_id_for(request.node.name))
    engines: List[FakeEngine] = []
    segmenters: List[FakeSegmenter] = []

    def factory(p, on_result, on_error):
        segmenters.append(FakeSegmenter())
        engines.append(FakeEngine(on_result, on_error))
        return segmenters[-1], engines[-1]

    extra = getattr(request, "param", {})
    overrides = [Parameter("max_consecutive_failures", value=3),
                 *(Parameter(k, value=v) for k, v in extra.items())]
    node = SegmentationLifecycleNode(engine_factory=factory, context=context, parameter_overrides=overrides)
    helper = rclpy.create_node("cleanup_test_client", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    executor.add_node(helper)
    yield SimpleNamespace(node=node, engines=engines, segmenters=segmenters, helper=helper,
                          executor=executor)
    executor.shutdown()
    node.destroy_node()
    helper.destroy_node()
    context.try_shutdown()


def spin(executor: SingleThreadedExecutor, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.02)


def camera_subscriptions(node: Any) -> List[str]:
    return [s.topic_name for s in node.subscriptions if s.topic_name.endswith(("/image", "/camera_info"))]


@pytest.mark.parametrize("ros", [{"cameras": ["front", "rear"]}], indirect=True)
def test_a_failed_transition_releases_subscriptions_and_timers(ros):
    node, helper = ros.node, ros.helper
    timers_unconfigured = len(list(node.timers))
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    ros.segmenters[-1].fail_palette_read = 2  # the rear camera's class_info
    node.trigger_activate()  # raises half-way -> on_error -> cleanup
    assert node._state_machine.current_state[1] == "unconfigured"
    assert ros.engines[-1].stopped
    assert camera_subscriptions(node) == []
    assert len(list(node.timers)) == timers_unconfigured

    # A camera that keeps publishing reaches no callback of the released cameras (before the
    # fix the front camera's frames ran into destroyed publishers and raised out of the executor).
    image_pub = helper.create_publisher(Image, "/front/image", reliable_qos())
    info_pub = helper.create_publisher(CameraInfo, "/front/camera_info", reliable_qos())
    frame = np.zeros((8, 8, 3), np.uint8)
    for i in range(5):
        info_pub.publish(CameraInfo())
        image_pub.publish(image_msg(frame, (i + 1) * 1_000_000_000, "camera"))
        spin(ros.executor, 0.05)

    # and configure -> activate afterwards creates one set again, not a second one
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    assert len(camera_subscriptions(node)) == 4
    assert len(list(node.timers)) == timers_unconfigured + 1  # qos_reliability auto: the QoS timer


@pytest.mark.parametrize("before_cleanup", ["failures", "fatal"])
def test_configure_after_cleanup_forgets_the_released_engines_failures(ros, before_cleanup):
    node = ros.node
    node.trigger_configure()
    node.trigger_activate()
    engine = ros.engines[-1]
    if before_cleanup == "failures":  # one short of max_consecutive_failures (3)
        for _ in range(2):
            engine.on_error(engine_error("failed"))
    else:  # declared fatal, and cleaned up before the executor's fatal check ran
        engine.on_error(engine_error("device_lost"))
    node.trigger_deactivate()
    node.trigger_cleanup()
    node.trigger_configure()
    node.trigger_activate()
    ros.engines[-1].on_error(engine_error("failed"))  # one failure of the fresh engine
    try:
        spin(ros.executor, 0.5)  # the fatal check runs every 0.1 s
    except FatalDeviceError as exc:
        pytest.fail(f"the fresh engine was declared fatal for the released engine's record: {exc}")
    assert node._state_machine.current_state[1] == "active"


def test_diagnostics_period_set_while_unconfigured_takes_effect(ros):
    node, helper = ros.node, ros.helper
    stamps: List[float] = []
    helper.create_subscription(DiagnosticArray, "/diagnostics", lambda m: stamps.append(time.monotonic()),
                               reliable_qos(100))
    result = node.set_parameters([Parameter("diagnostics_period", value=0.2)])[0]
    assert result.successful, result.reason
    spin(ros.executor, 0.5)
    stamps.clear()
    spin(ros.executor, 2.0)
    assert len(stamps) >= 6, f"{len(stamps)} /diagnostics in 2 s while unconfigured with period 0.2 s"
    node.trigger_configure()
    stamps.clear()
    spin(ros.executor, 2.0)
    assert len(stamps) >= 6, f"{len(stamps)} /diagnostics in 2 s after configure with period 0.2 s"
