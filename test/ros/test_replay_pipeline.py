"""make-bag -> pspnet bag -> replay -> segmentation_node -> outputs, every step a real process.

The node's live outputs must carry the bag's exact stamps and equal, pixel for pixel, what
`pspnet bag` wrote offline for the same frames with the same model.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from ros_harness import NodeProcess, RosClient, as_array, domain_id_for, reliable_qos, ros_env, stamp_ns

from pspnet_ros.bags import common as bc

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "data" / "sample" / "kitti_road"
PYTHON = sys.executable
DOMAIN = domain_id_for(__name__)
KINDS = ("labels", "color", "overlay", "drivable")


def cli(*args: str) -> None:
    """`pspnet ARGS` in this process (the CLIs are ROS-free; the ROS side runs as processes)."""
    from pspnet_ros.cli import main

    assert main(list(args)) == 0


def offline_outputs(bag: Path):
    from rosbags.rosbag2 import Reader

    out = {}
    with Reader(bag) as reader:
        for c, t, data in reader.messages():
            if c.topic.startswith("/camera/segmentation/") and c.msgtype != bc.STRING:
                out.setdefault(c.topic.rsplit("/", 1)[1], {})[t] = bc.deserialize(data, c.msgtype)
    return out


def test_bag_replayed_to_the_node_gives_the_offline_results(tmp_path, tiny_checkpoint):
    from sensor_msgs.msg import CameraInfo, Image
    from std_srvs.srv import SetBool

    bag, seg = tmp_path / "drive", tmp_path / "drive_seg"
    cli("make-bag", str(SAMPLE), "--out", str(bag), "--limit", "4", "--rate", "5",
        "--start-time", "1700000000", "--no-progress")
    cli("bag", str(bag), "--out", str(seg), "--checkpoint", str(tiny_checkpoint), "--device",
        "cpu", "--no-progress")
    offline = offline_outputs(seg)
    stamps = sorted(offline["labels"])
    assert stamps == [1_700_000_000_000_000_000 + i * 200_000_000 for i in range(4)]

    # The node in namespace /camera publishes the same topic names `pspnet bag` wrote.
    node = NodeProcess(tmp_path, DOMAIN, {"checkpoint": str(tiny_checkpoint), "device": "cpu",
                                          "drop_policy": "queue", "qos_reliability": "auto"},
                       namespace="/camera")
    client = RosClient(DOMAIN, name="pipeline_test_client")
    try:
        got = {k: client.collect(Image, f"/camera/segmentation/{k}", reliable_qos(20))
               for k in KINDS}
        infos, _ = client.collect(CameraInfo, "/camera/segmentation/camera_info", reliable_qos(20))
        # Answered only once the node spins: frames sent before would meet a node not yet
        # taking them from its keep-last-1 input queue.
        client.call(SetBool, "/camera/segmentation_node/enable", SetBool.Request(data=True),
                    timeout=120)
        client.wait_until(lambda: all(sub.get_publisher_count() > 0 for _, sub in got.values()),
                          30, "the node's output publishers")
        replay = subprocess.run(
            # Half speed: the node's input queue is keep-last-1 by design, and a loaded CI
            # machine must not turn that into a lost frame here.
            [PYTHON, "-m", "pspnet_ros.ros.replay", str(bag), "--wait-for-subscribers", "30",
             "--rate", "0.5", "--remap", "/camera/image_raw:=/camera/image"],
            cwd=REPO, env=ros_env(DOMAIN), capture_output=True, text=True, timeout=120)
        assert replay.returncode == 0, replay.stdout + replay.stderr
        client.wait_until(lambda: all(len(c.messages) >= 4 for c, _ in got.values())
                          and len(infos.messages) >= 4, 120, "4 frames of every output")
    finally:
        client.close()
        rc = node.stop()
    assert rc == 0, node.output()

    for kind, (collector, _) in got.items():
        msgs = collector.messages
        assert [stamp_ns(m.header) for m in msgs] == stamps, kind  # exact, in order, none lost
        for m in msgs:
            assert m.header.frame_id == "camera"
            ref = offline[kind][stamp_ns(m.header)]
            assert (m.encoding, m.height, m.width) == (ref.encoding, ref.height, ref.width)
            np.testing.assert_array_equal(as_array(m), np.squeeze(bc.image_to_rgb(ref)
                                                                  if ref.encoding == "rgb8"
                                                                  else bc.image_to_rgb(ref)[..., 0]))
    for m in infos.messages:
        ref = offline["camera_info"][stamp_ns(m.header)]
        assert list(m.k) == list(ref.k) and (m.width, m.height) == (ref.width, ref.height)
