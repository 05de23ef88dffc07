"""``segmentation_node -p backend:=torch`` with the default ``precision: auto`` serves (issue 22, 3a).

The shipped KITTI model has an INT8 file, which ``auto`` picks on CPU; PyTorch runs no INT8, so the
node must start in fp32 on the torch backend instead of a FATAL "int8 needs backend ...".
"""

from __future__ import annotations

import pytest

import rclpy  # noqa: F401  (the ROS layer must run: a missing rclpy is an error, not a skip)

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from ros_harness import (NodeProcess, as_array, diag_values, domain_id_for, find_status,  # noqa: E402
                         image_msg, reliable_qos, stamp_ns, warm_up)

T0 = 1_700_000_000_000_000_000


@pytest.fixture(scope="module")
def domain():
    return domain_id_for(__name__)


@pytest.fixture(scope="module")
def node(tmp_path_factory, domain):
    proc = NodeProcess(tmp_path_factory.mktemp("torch_node"), domain, {
        "checkpoint": "auto", "device": "cpu", "backend": "torch", "diagnostics_period": 1.0})
    proc.wait_for_output("serving 1 camera", timeout=180)
    yield proc
    proc.stop()


def test_backend_torch_with_auto_precision_serves_fp32(client, camera, kitti_frames, node):
    image_pub, _ = camera
    labels, _ = client.collect(Image, "/segmentation/labels", reliable_qos(50))
    diags, _ = client.collect(DiagnosticArray, "/diagnostics", reliable_qos(50))
    _, frame = kitti_frames[0]
    warm_up(lambda s: image_pub.publish(image_msg(frame, s, "camera")), [labels])
    stamp = T0 + 7
    image_pub.publish(image_msg(frame, stamp, "camera"))
    got = as_array(labels.wait_for(lambda m: stamp_ns(m.header) == stamp, 60, "the labels"))
    assert got.shape == frame.shape[:2]
    assert "FATAL" not in node.output()

    def named(msg):
        st = find_status(msg, "segmentation_node")
        return st is not None and "backend" in diag_values(st)

    values = diag_values(find_status(diags.wait_for(named, 30, "diagnostics"), "segmentation_node"))
    assert values["backend"] == "torch" and values["precision"] == "fp32"
