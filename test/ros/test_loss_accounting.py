"""The node's input-loss accounting with real rclpy, in process, with a fake engine.

Frames go straight into the node's admission path with the message info each distro's rclpy
gives (Kilted: sequence number and publisher gid; Jazzy: sequence number only), so each case
is exact and takes no DDS traffic: lifecycle re-activation after a long pause (3b), several
publishers on one topic without a gid, and restarted publishers (3d).
"""

from __future__ import annotations

import pytest
import rclpy
from rclpy.context import Context
from std_msgs.msg import Header

from pspnet_ros.ros import camera_input, node as node_module
from pspnet_ros.ros.transport_hint import LARGE_FRAMES_VALUE, TRANSPORTS_VAR
from ros_harness import domain_id_for

T0 = 1_700_000_000
HZ = 30.0


class _FakeSeg:
    classes = ["not_road", "road"]
    palette = [[0, 0, 0], [255, 0, 255]]
    meta = {"drivable_classes": ["road"]}
    model_name = "fake"
    inference_size = (8, 8)
    device = "cpu"
    backend = "fake"
    precision = "fp32"


class _FakeEngine:
    def start(self):
        pass

    def stop(self, timeout=None):
        pass

    def flush(self, timeout=None):
        return True

    def update(self, **kw):
        pass

    def stats(self):
        return {"device": "cpu", "dropped": 0}

    def submit(self, *a, **kw):
        return True

    submit_encoded = submit


def _factory(params, on_result, on_error):
    return _FakeSeg(), _FakeEngine()


@pytest.fixture()
def lifecycle_node():
    ctx = Context()
    rclpy.init(context=ctx, domain_id=domain_id_for(__name__))
    n = node_module.SegmentationLifecycleNode(engine_factory=_factory, context=ctx)
    try:
        yield n
    finally:
        n.close()
        rclpy.try_shutdown(context=ctx)


def _header(i: int, t0: float = T0) -> Header:
    h = Header(frame_id="cam")
    ns = int(t0 * 1e9 + i * 1e9 / HZ)
    h.stamp.sec, h.stamp.nanosec = divmod(ns, 1_000_000_000)
    return h


def _info(seq: int, gid: bytes = None) -> dict:
    info = {"source_timestamp": 0, "received_timestamp": 0, "publication_sequence_number": seq,
            "reception_sequence_number": None}
    if gid is not None:
        info["publisher_gid"] = {"implementation_identifier": "rmw_fastrtps_cpp", "data": gid}
    return info


def _lost(n) -> int:
    return n._cameras[0].stats.counts["lost"]


def test_rclpy_message_info_reaches_the_callbacks():
    """Jazzy's rclpy (7.1) passes message info to two-argument callbacks, like Kilted's."""
    assert camera_input.MESSAGE_INFO


@pytest.mark.parametrize("gid", [b"\x01" * 16, None], ids=["kilted_gid", "jazzy_no_gid"])
def test_reactivation_after_a_long_pause_counts_no_phantom_losses(lifecycle_node, gid):
    n = lifecycle_node
    n.trigger_configure()
    n.trigger_activate()
    cam = n._cameras[0]
    for i in range(30):
        n._admit(cam, _header(i), _info(1 + i, gid))
    assert _lost(n) == 0
    n.trigger_deactivate()
    # 60 s inactive while the camera goes on at 30 Hz: 1,800 frames the node did not listen to
    n.trigger_activate()
    for i in range(1830, 1860):
        n._admit(cam, _header(i), _info(1 + i, gid))
    assert _lost(n) == 0
    n._admit(cam, _header(1861), _info(1862, gid))  # and real losses still count (1860)
    assert _lost(n) == 1


def test_several_publishers_without_gid_share_no_sequence(lifecycle_node):
    """Two drivers on one topic (Jazzy: no gid), sequence numbers far apart, nothing lost."""
    n = lifecycle_node
    n.trigger_configure()
    n.trigger_activate()
    cam = n._cameras[0]
    for i in range(120):
        n._admit(cam, _header(i), _info(500 + i))
        n._admit(cam, _header(i, T0 + 0.005), _info(3 + i))
    assert _lost(n) == 0
    assert 1.0 / cam.loss.period() == pytest.approx(HZ, rel=1e-3)


def test_restarted_publishers_are_not_kept_forever(lifecycle_node):
    n = lifecycle_node
    n.trigger_configure()
    n.trigger_activate()
    cam = n._cameras[0]
    for k in range(100):  # a driver restarted 100 times, each with a new gid
        for i in range(3):
            n._admit(cam, _header(10 * k + i), _info(1 + i, bytes([k + 1]) * 16))
    assert cam.loss.tracked_publishers() <= 8
    assert _lost(n) == 0


@pytest.mark.parametrize("env", [{}, {TRANSPORTS_VAR: LARGE_FRAMES_VALUE}], ids=["unset", "set"])
def test_best_effort_without_the_transport_setting_is_said(env, monkeypatch):
    """Subscribed best effort with Fast DDS as it comes: the node names the setting it needs."""
    from rclpy.parameter import Parameter

    for var in (TRANSPORTS_VAR, "FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    ctx = Context()
    rclpy.init(context=ctx, domain_id=domain_id_for(__name__ + ":be"))
    n = node_module.SegmentationNode(engine_factory=_factory, context=ctx, parameter_overrides=[
        Parameter("qos_reliability", value="best_effort")])
    try:
        hint = n._cameras[0].transport_hint
        if rclpy.get_rmw_implementation_identifier().startswith("rmw_fastrtps") and not env:
            assert LARGE_FRAMES_VALUE in hint
        else:
            assert hint == ""
    finally:
        n.close()
        rclpy.try_shutdown(context=ctx)
