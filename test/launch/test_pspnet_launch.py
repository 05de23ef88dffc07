"""launch_testing: the real launch/pspnet.launch.py starts segmentation_node.

The node answers real KITTI frames with labels and overlay, and shuts down cleanly when the launch
ends.

``Node(package='pspnet_ros', executable='segmentation_node')`` finds the program the way
``ros2 run`` does, through AMENT_PREFIX_PATH; here a temporary prefix holds the package marker
and a wrapper that runs this checkout's node (colcon builds the same layout).
"""

from __future__ import annotations

import os
import sys
import tempfile
import unittest
import zlib
from pathlib import Path

import numpy as np
import pytest


import launch_testing  # noqa: E402
import launch_testing.asserts  # noqa: E402
from launch import LaunchDescription  # noqa: E402
from launch.actions import IncludeLaunchDescription, SetEnvironmentVariable  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "test"))
sys.path.insert(0, str(REPO / "test" / "ros"))
sys.path.insert(0, str(REPO / "test" / "launch"))
from pspnet_test_helpers import make_tiny_checkpoint  # noqa: E402
from pspnet_launch_helpers import make_prefix, prepend_prefix, restore_prefix  # noqa: E402
from ros_harness import (RosClient, as_array, image_msg, reliable_qos, stamp_ns,  # noqa: E402
                         warm_up, write_params)

_SAVED = {}
DOMAIN = 1 + (os.getpid() * 7919 + zlib.crc32(__name__.encode())) % 200
NAMESPACE = "kitti"


@pytest.mark.launch_test
def generate_test_description():
    tmp = Path(tempfile.mkdtemp(prefix="pspnet_launch_test_"))
    prefix = make_prefix(tmp / "install")
    checkpoint = make_tiny_checkpoint(tmp / "tiny_kitti.pt")
    params = write_params(tmp / "params.yaml", {"checkpoint": str(checkpoint), "device": "cpu",
                                                "diagnostics_period": 0.5})
    # Package lookup happens in this process (ament_index_python reads os.environ).
    _SAVED["prefix"] = prepend_prefix(prefix)
    node_launch = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(REPO / "launch" / "pspnet.launch.py")),
        launch_arguments={"params_file": str(params), "image_topic": "/kitti/image_raw",
                          "camera_info_topic": "/kitti/camera_info", "namespace": NAMESPACE}.items())
    return LaunchDescription([
        SetEnvironmentVariable("ROS_DOMAIN_ID", str(DOMAIN)),
        SetEnvironmentVariable("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST"),
        SetEnvironmentVariable("OMP_NUM_THREADS", "1"),
        SetEnvironmentVariable("PYTHONUNBUFFERED", "1"),
        node_launch,
        launch_testing.actions.ReadyToTest(),
    ]), {}


def kitti_frame() -> np.ndarray:
    from PIL import Image as PILImage

    from pspnet_ros.paths import data_root

    root = data_root() / "kitti_road"
    stem = (root / "val.txt").read_text().split()[0]
    return np.asarray(PILImage.open(root / "image_2" / f"{stem}.jpg").convert("RGB"))


class TestLabelsAndOverlayArrive(unittest.TestCase):
    def test_labels_and_overlay_for_a_real_frame(self, proc_output):
        from sensor_msgs.msg import Image

        proc_output.assertWaitFor("serving 1 camera", timeout=180, stream="stderr")
        client = RosClient(DOMAIN)
        try:
            frame = kitti_frame()
            pub = client.node.create_publisher(Image, "/kitti/image_raw", reliable_qos(10))
            labels, _ = client.collect(Image, f"/{NAMESPACE}/segmentation/labels", reliable_qos(20))
            overlay, _ = client.collect(Image, f"/{NAMESPACE}/segmentation/overlay", reliable_qos(20))
            warm_up(lambda s: pub.publish(image_msg(frame, s, "kitti_cam")), [labels, overlay])
            stamp = 1_700_000_000_987_654_321
            pub.publish(image_msg(frame, stamp, "kitti_cam"))
            for name, c in (("labels", labels), ("overlay", overlay)):
                msg = c.wait_for(lambda m: stamp_ns(m.header) == stamp, 60, name)
                self.assertEqual(msg.header.frame_id, "kitti_cam")
                self.assertEqual((msg.height, msg.width), frame.shape[:2])
                if name == "labels":
                    self.assertLessEqual(int(as_array(msg).max()), 1)
        finally:
            client.close()


@launch_testing.post_shutdown_test()
class TestCleanShutdown(unittest.TestCase):
    @classmethod
    def tearDownClass(cls):
        # Leave the pytest process as we found it for the test modules that follow.
        restore_prefix(_SAVED.get("prefix", ""))

    def test_node_exits_cleanly(self, proc_info, proc_output):
        launch_testing.asserts.assertExitCodes(proc_info)  # 0: SIGINT handled, engine stopped
        for output in proc_output:
            self.assertNotIn("Traceback", output.text.decode(errors="replace"))
