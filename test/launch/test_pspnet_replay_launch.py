"""launch_testing: launch/pspnet_replay.launch.py plays a KITTI bag into segmentation_node.

The bag is played by the replay tool (with /clock) into segmentation_node with use_sim_time (RViz
off): outputs carry the bag's headers, camera_info is republished, and latency in /diagnostics is
measured on the bag's clock.
"""

from __future__ import annotations

import os
import sys
import tempfile
import unittest
import zlib
from pathlib import Path

import pytest


import launch_testing  # noqa: E402
import launch_testing.asserts  # noqa: E402
from launch import LaunchDescription  # noqa: E402
from launch.actions import IncludeLaunchDescription, SetEnvironmentVariable  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
for sub in ("test", "test/ros", "test/launch"):
    sys.path.insert(0, str(REPO / sub))
from pspnet_test_helpers import make_tiny_checkpoint  # noqa: E402
from pspnet_launch_helpers import make_prefix, prepend_prefix, restore_prefix  # noqa: E402
from ros_harness import RosClient, diag_values, find_status, reliable_qos, stamp_ns, write_params  # noqa: E402

DOMAIN = 1 + (os.getpid() * 7919 + zlib.crc32(__name__.encode())) % 200
START_S = 1000  # bag time, far from wall time: a wall-clock latency would be ~1.7e12 ms
RATE_HZ = 5
STEMS = ("um_000000", "um_000001", "um_000002")
BAG_STAMPS = {START_S * 10**9 + i * 10**9 // RATE_HZ for i in range(len(STEMS))}
_SAVED = {}


@pytest.mark.launch_test
def generate_test_description():
    from pspnet_ros.tools.bags import make_bag
    from pspnet_ros.paths import data_root

    tmp = Path(tempfile.mkdtemp(prefix="pspnet_replay_test_"))
    prefix = make_prefix(tmp / "install")
    checkpoint = make_tiny_checkpoint(tmp / "tiny_kitti.pt")
    params = write_params(tmp / "params.yaml", {"checkpoint": str(checkpoint), "device": "cpu",
                                                "diagnostics_period": 0.5})
    images = data_root() / "kitti_road" / "image_2"
    bag = tmp / "kitti_bag"
    rc = make_bag.main([*(str(images / f"{s}.jpg") for s in STEMS), "--out", str(bag),
                        "--rate", str(RATE_HZ), "--start-time", str(START_S), "--no-progress"])
    assert rc == 0, "make-bag failed"
    _SAVED["prefix"] = prepend_prefix(prefix)
    replay = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(REPO / "launch" / "pspnet_replay.launch.py")),
        launch_arguments={"bag": str(bag), "params_file": str(params), "rviz": "false",
                          "loop": "true"}.items())
    return LaunchDescription([
        SetEnvironmentVariable("ROS_DOMAIN_ID", str(DOMAIN)),
        SetEnvironmentVariable("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST"),
        SetEnvironmentVariable("OMP_NUM_THREADS", "1"),
        SetEnvironmentVariable("PYTHONUNBUFFERED", "1"),
        replay,
        launch_testing.actions.ReadyToTest(),
    ]), {}


class TestReplayIntoNode(unittest.TestCase):
    def test_outputs_follow_the_bag_on_sim_time(self, proc_output):
        from diagnostic_msgs.msg import DiagnosticArray
        from sensor_msgs.msg import CameraInfo, Image

        proc_output.assertWaitFor("serving 1 camera", timeout=180, stream="stderr")
        client = RosClient(DOMAIN)
        try:
            labels, _ = client.collect(Image, "/segmentation/labels", reliable_qos(20))
            info, _ = client.collect(CameraInfo, "/segmentation/camera_info", reliable_qos(20))
            diag, _ = client.collect(DiagnosticArray, "/diagnostics", reliable_qos(50))
            msg = labels.wait_for(lambda m: stamp_ns(m.header) in BAG_STAMPS, 120, "labels of a bag frame")
            self.assertEqual(msg.header.frame_id, "camera")  # make-bag's default frame_id
            self.assertEqual((msg.height, msg.width), (375, 1242))
            cam_info = info.wait_for(lambda m: stamp_ns(m.header) in BAG_STAMPS, 60, "republished camera_info")
            self.assertEqual((cam_info.height, cam_info.width), (375, 1242))

            def latency_on_bag_clock(m):
                s = find_status(m, "/segmentation_node")
                value = diag_values(s).get("latency p50 (ms)", "n/a") if s else "n/a"
                return value != "n/a" and 0 <= float(value) < 60_000
            diag.wait_for(latency_on_bag_clock, 60, "diagnostics latency measured on the bag's clock")
        finally:
            client.close()


@launch_testing.post_shutdown_test()
class TestCleanShutdown(unittest.TestCase):
    @classmethod
    def tearDownClass(cls):
        restore_prefix(_SAVED.get("prefix", ""))

    def test_processes_exit_cleanly(self, proc_info, proc_output):
        launch_testing.asserts.assertExitCodes(proc_info)
        for output in proc_output:
            self.assertNotIn("Traceback", output.text.decode(errors="replace"))
