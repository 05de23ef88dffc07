"""Bags written by `pspnet make-bag` are what ROS 2 expects, and `replay` publishes them exactly.

Real rclpy, real processes over DDS (the replay tool runs as a subprocess, the test subscribes).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ros_harness import RosClient, domain_id_for, reliable_qos, ros_env, stamp_ns

from pspnet_ros.tools.bags import messages
from pspnet_ros.tools.bags import make_bag

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "data" / "sample" / "kitti_road"
PYTHON = sys.executable
DOMAIN = domain_id_for(__name__)


def bag_messages(bag: Path):
    from rosbags.rosbag2 import Reader

    with Reader(bag) as reader:
        return [(c.topic, c.msgtype, t, bytes(d)) for c, t, d in reader.messages()]


@pytest.fixture(scope="module")
def raw_bag(tmp_path_factory) -> Path:
    """4 real KITTI frames (full size, rgb8) + KITTI camera_info at 20 Hz, mcap."""
    out = tmp_path_factory.mktemp("bags") / "raw"
    frames = tmp_path_factory.mktemp("frames")
    for p in sorted(SAMPLE.glob("*.jpg"))[:4]:
        (frames / p.name).write_bytes(p.read_bytes())
    assert make_bag.main([str(frames), "--out", str(out), "--rate", "20", "--start-time",
                          "1700000000.5", "--no-progress"]) == 0
    return out


@pytest.fixture()
def client():
    c = RosClient(DOMAIN, name="replay_test_client")
    yield c
    c.close()


def replay(bag: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([PYTHON, "-m", "pspnet_ros.tools.ros.replay", str(bag), *args],
                            cwd=REPO, env=ros_env(DOMAIN), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def test_bag_types_match_the_installed_ros2_messages(raw_bag):
    """Type hashes equal the installed type descriptions; rclpy deserializes every message."""
    import sensor_msgs
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import CameraInfo, CompressedImage, Image

    share = Path(sensor_msgs.__file__).resolve()
    while not (share / "share").is_dir() and share != share.parent:
        share = share.parent
    ts = messages.typestore()
    for msgtype in (messages.IMAGE, messages.COMPRESSED, messages.CAMERA_INFO, messages.STRING,
                    "rosgraph_msgs/msg/Clock"):
        pkg, _, name = msgtype.split("/")
        desc = json.loads((share / "share" / pkg / "msg" / f"{name}.json").read_text())
        assert desc["type_hashes"][0]["hash_string"] == ts.hash_rihs01(msgtype), msgtype

    classes = {messages.IMAGE: Image, messages.CAMERA_INFO: CameraInfo, messages.COMPRESSED: CompressedImage}
    msgs = bag_messages(raw_bag)
    assert len(msgs) == 8
    for topic, msgtype, t, data in msgs:
        msg = deserialize_message(data, classes[msgtype])
        assert stamp_ns(msg.header) == t and msg.header.frame_id == "camera"
        if msgtype == messages.IMAGE:
            ours = messages.deserialize(data, msgtype)
            assert (msg.width, msg.height, msg.encoding, msg.step) == (1242, 375, "rgb8", 3726)
            assert bytes(msg.data) == bytes(ours.data)


def test_replay_publishes_every_message_unchanged_with_clock(raw_bag, client):
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import CameraInfo, Image

    images, _ = client.collect(Image, "/camera/image_raw", reliable_qos(10))
    infos, _ = client.collect(CameraInfo, "/camera/camera_info", reliable_qos(10))
    clock, _ = client.collect(Clock, "/clock",
                              QoSProfile(depth=100, reliability=ReliabilityPolicy.BEST_EFFORT))
    proc = replay(raw_bag, "--clock", "100", "--wait-for-subscribers", "30")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    client.wait_until(lambda: len(images.messages) >= 4 and len(infos.messages) >= 4, 20,
                      "4 images and 4 camera_infos")

    expected = [(t, d) for topic, _, t, d in bag_messages(raw_bag) if topic == "/camera/image_raw"]
    got = images.messages
    assert len(got) == 4  # reliable: every frame, once
    for (t, data), msg in zip(expected, got):
        assert stamp_ns(msg.header) == t
        assert bytes(msg.data) == bytes(messages.deserialize(data, messages.IMAGE).data)
    assert [stamp_ns(m.header) for m in infos.messages] == [t for t, _ in expected]
    ticks = [m.clock.sec * 1_000_000_000 + m.clock.nanosec for m in clock.messages]
    assert ticks, "no /clock received"
    assert ticks == sorted(ticks)
    # /clock is best effort (ClockQoS, as ros2 bag play): ticks may be skipped, never invented.
    assert expected[0][0] <= ticks[0] and ticks[-1] <= expected[-1][0]
    assert "published: /camera/camera_info 4, /camera/image_raw 4" in out


def test_replay_compressed_sqlite3_with_remap_and_loop(tmp_path, client):
    from sensor_msgs.msg import CameraInfo, CompressedImage

    bag = tmp_path / "cbag"
    assert make_bag.main([str(SAMPLE), "--out", str(bag), "--format", "sqlite3", "--compressed",
                          "--limit", "2", "--rate", "10", "--start-time", "3",
                          "--no-progress"]) == 0
    images, _ = client.collect(CompressedImage, "/front/image_raw/compressed", reliable_qos(50))
    infos, _ = client.collect(CameraInfo, "/front/camera_info", reliable_qos(50))
    proc = replay(bag, "--loop", "--rate", "2", "--wait-for-subscribers", "30",
                  "--remap", "/camera/image_raw/compressed:=/front/image_raw/compressed",
                  "--ros-args", "-r", "/camera/camera_info:=/front/camera_info")
    try:
        client.wait_until(lambda: len(images.messages) >= 5, 60, "5 looped images")
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out
    stamps = [stamp_ns(m.header) for m in images.messages]
    assert stamps[:5] == [3_000_000_000, 3_100_000_000] * 2 + [3_000_000_000]
    jpegs = sorted(SAMPLE.glob("*.jpg"))
    assert bytes(images.messages[1].data) == jpegs[1].read_bytes()
    assert images.messages[0].format == "rgb8; jpeg compressed bgr8"
    assert len(infos.messages) >= 4


@pytest.mark.parametrize("sigs", [[signal.SIGINT], [signal.SIGTERM], [signal.SIGINT, signal.SIGINT]],
                         ids=["SIGINT", "SIGTERM", "SIGINT_twice"])
def test_replay_stops_promptly_and_cleanly_on_a_signal(raw_bag, client, sigs):
    """Ctrl-C (or a supervisor's SIGTERM) while frames go out: exit 0 within 5 s, no traceback.

    rclpy's own signal handlers shut the context down mid-publish ("publisher's context is
    invalid", exit 1) on Jazzy and Kilted alike; the replay handles the signals itself. Ctrl-C
    on ``ros2 launch`` delivers SIGINT twice (terminal group, then launch): no traceback either.
    """
    from sensor_msgs.msg import Image

    images, _ = client.collect(Image, "/camera/image_raw", reliable_qos(50))
    proc = replay(raw_bag, "--loop", "--rate", "20", "--wait-for-subscribers", "30")
    try:
        client.wait_until(lambda: len(images.messages) >= 20, 60, "20 looped images")
    finally:
        for k, sig in enumerate(sigs):
            if k:
                time.sleep(0.02)
            proc.send_signal(sig)
        try:
            out, _ = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
            pytest.fail("replay did not stop within 5 s:\n" + out)
    assert proc.returncode == 0, out
    assert "Traceback" not in out, out
    assert "published: /camera/camera_info" in out, out


def test_replay_refuses_what_it_cannot_play(tmp_path, raw_bag):
    missing = subprocess.run([PYTHON, "-m", "pspnet_ros.tools.ros.replay", str(tmp_path / "nope")],
                             env=ros_env(DOMAIN), capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    wrong = subprocess.run([PYTHON, "-m", "pspnet_ros.tools.ros.replay", str(raw_bag), "--topic",
                            "/nope"], env=ros_env(DOMAIN), capture_output=True, text=True,
                           timeout=60)
    assert wrong.returncode == 1 and "/nope" in wrong.stderr and "/camera/image_raw" in wrong.stderr
