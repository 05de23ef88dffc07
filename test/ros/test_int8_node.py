"""The shipped KITTI model in a real node process on CPU: INT8 by default, over real DDS.

``precision: auto`` and ``backend: auto`` must pick the shipped accuracy-checked INT8 model
(OpenVINO where installed). The labels the node publishes for a real KITTI frame equal what the
library's Segmenter gives with the same settings, and /diagnostics names the backend, the
precision and the node's own per-frame stage times.
"""

from __future__ import annotations

import numpy as np
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
    proc = NodeProcess(tmp_path_factory.mktemp("int8_node"), domain, {
        "checkpoint": "auto", "device": "cpu", "diagnostics_period": 1.0})
    proc.wait_for_output("serving 1 camera", timeout=180)
    yield proc
    proc.stop()


def test_shipped_model_runs_int8_and_publishes_the_library_labels(client, camera, kitti_frames, node):
    from pspnet_ros.inference import Segmenter
    from pspnet_ros.paths import shipped_model

    image_pub, _ = camera
    labels, _ = client.collect(Image, "/segmentation/labels", reliable_qos(50))
    diags, _ = client.collect(DiagnosticArray, "/diagnostics", reliable_qos(50))
    _, frame = kitti_frames[0]
    warm_up(lambda s: image_pub.publish(image_msg(frame, s, "camera")), [labels])
    stamp = T0 + 42
    image_pub.publish(image_msg(frame, stamp, "camera"))
    got = as_array(labels.wait_for(lambda m: stamp_ns(m.header) == stamp, 60, "the labels"))

    assert "int8" in node.output()  # start-up log: backend and precision
    seg = Segmenter.from_checkpoint(shipped_model("kitti_road", "cpu"), device="cpu", precision="auto")
    assert seg.precision == "int8"
    (ref,) = seg.predict(frame, outputs=("labels",))
    assert got.shape == frame.shape[:2]
    assert (got == ref.labels).mean() > 0.999  # same model, same ops; threads may differ in the last bit

    def has_stages(msg):
        st = find_status(msg, "segmentation_node")
        return st is not None and diag_values(st).get("node publish (ms)", "n/a") != "n/a"

    values = diag_values(find_status(diags.wait_for(has_stages, 30, "diagnostics with stage times"),
                                     "segmentation_node"))
    assert values["precision"] == "int8" and values["backend"] == seg.backend
    assert int(values["inference threads"]) >= 1
    for stage in ("receive", "publish"):
        assert 0.0 < float(values[f"node {stage} (ms)"]) < 1000.0
    assert np.isfinite(float(values["stage inference (ms)"]))
