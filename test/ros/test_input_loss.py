"""Frames lost before the node's callback are counted and published in /diagnostics.

A reliable camera publishes 50 Hz (image + camera_info with the same stamps) into a node whose
image callback takes 60 ms (``fault_node.py --slow-callback-ms``: an executor busy elsewhere).
The keep-last-1 input queue replaces most frames inside DDS; the engine never sees them, so its
drop counter stays low. /diagnostics must show the camera's rate from the stamps, the lower
input rate and the frames lost, and received + lost must account for what was published.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import numpy as np
import pytest

from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import CameraInfo, Image

from ros_harness import (NodeProcess, RosClient, diag_values, domain_id_for, find_status, image_msg,
                         kitti_camera_info, reliable_qos)

pytestmark = pytest.mark.slow
FAULT_NODE = Path(__file__).resolve().parent / "fault_node.py"
T0 = 1_700_000_000 * 10**9
RATE_HZ = 50.0
SECONDS = 6.0


def test_a_camera_faster_than_the_callback_shows_its_losses(tmp_path, tiny_checkpoint):
    domain = domain_id_for(__name__)
    node = NodeProcess(tmp_path, domain, {"checkpoint": str(tiny_checkpoint), "device": "cpu",
                                          "diagnostics_period": 1.0},
                       namespace="/loss", name="node_loss", script=FAULT_NODE,
                       script_args=["--slow-callback-ms", "60"])
    client = None
    try:
        node.wait_for_output("serving 1 camera", timeout=120)
        client = RosClient(domain, name="fast_camera")
        pub = client.node.create_publisher(Image, "/loss/image", reliable_qos(10))
        info_pub = client.node.create_publisher(CameraInfo, "/loss/camera_info", reliable_qos(10))
        labels, _ = client.collect(Image, "/loss/segmentation/labels", reliable_qos(10))
        diag, _ = client.collect(DiagnosticArray, "/diagnostics", reliable_qos(100))
        client.wait_until(lambda: pub.get_subscription_count() > 0 and info_pub.get_subscription_count() > 0,
                          30, "the node subscribes")
        frame = np.full((96, 320, 3), 90, np.uint8)
        n = int(RATE_HZ * SECONDS)
        start = time.monotonic()
        for i in range(n):
            stamp = T0 + int(i * 1e9 / RATE_HZ)
            info_pub.publish(kitti_camera_info(stamp, "cam", 96, 320))
            pub.publish(image_msg(frame, stamp, "cam"))
            time.sleep(max(0.0, start + (i + 1) / RATE_HZ - time.monotonic()))

        def totals(m):
            s = find_status(m, "/loss/segmentation_node")
            return diag_values(s) if s is not None else None

        time.sleep(2.5)  # the last window closes
        values = totals(diag.messages[-1])
        assert values is not None, node.output()
    finally:
        if client is not None:
            client.close()
        node.stop(signal.SIGINT)
    received = int(values["received (total)"])
    lost = int(values["lost before the node (total)"])
    camera_hz = float(values["camera rate (Hz, from stamps)"])
    print(f"published {n} at {RATE_HZ:g} Hz: received {received}, lost {lost}, camera rate {camera_hz:.1f} Hz, "
          f"engine dropped {values['dropped (total)']}")
    assert abs(camera_hz - RATE_HZ) < 5.0, values
    assert lost > received, values  # most frames never reached the callback
    # The first frames arrive before the period is known (3 gaps), so allow a few uncounted.
    assert n - 10 <= received + lost <= n, values
    windows = [totals(m) for m in diag.messages]
    rates = [float(v["lost before the node (/s)"]) for v in windows if v and float(v["input rate (Hz)"]) > 5]
    assert rates and max(rates) > 20.0, rates
