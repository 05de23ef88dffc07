"""segmentation_node on CUDA, as its own process over DDS.

Two cameras of different sizes in one node, raw and compressed input; every published label image is
checked against ``Segmenter.predict`` of its own frame on the same device (frames mixed up between
cameras, the ring or the decode stream would fail it).
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

pytestmark = pytest.mark.gpu

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ros"))
from ros_harness import (NodeProcess, RosClient, as_array, domain_id_for, image_msg,  # noqa: E402
                         reliable_qos, stamp_ns, warm_up)

T0 = 1_700_000_900_000_000_000
SIZES = {"a": (375, 1242), "b": (188, 621)}
N = 6  # frames per camera


def _compressed_msg(rgb, stamp, frame_id):
    from sensor_msgs.msg import CompressedImage

    msg = CompressedImage()
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
    msg.header.frame_id = frame_id
    msg.format = "rgb8; jpeg compressed bgr8"
    msg.data = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
    return msg


@pytest.mark.parametrize("transport", ["raw", "compressed"])
def test_node_on_cuda_serves_two_cameras_of_different_sizes(tmp_path, transport, kitti_frames):
    from sensor_msgs.msg import CompressedImage, Image

    from pspnet_ros.inference import Segmenter
    from pspnet_ros.paths import resolve_checkpoint

    ckpt = resolve_checkpoint("auto", dataset="kitti_road", device="cuda")
    domain = domain_id_for(__name__ + transport)
    node = NodeProcess(tmp_path, domain, {
        "checkpoint": str(ckpt), "device": "cuda", "cameras": ["a", "b"], "input_transport": transport,
        "publish_color": False, "publish_overlay": False, "publish_drivable": False,
        "drop_policy": "queue", "max_batch": 2, "diagnostics_period": 0.5}, name=f"node_{transport}")
    frames = {cam: [cv2.resize(kitti_frames[i % len(kitti_frames)][1], (w, h)) for i in range(N)]
              for cam, (h, w) in SIZES.items()}
    for cam in frames:  # every frame differs
        frames[cam] = [np.ascontiguousarray(f if i % 2 == 0 else f[:, ::-1]) for i, f in enumerate(frames[cam])]
    client = None
    try:
        node.wait_for_output("serving 2 camera", timeout=180)
        client = RosClient(domain, name=f"cameras_{transport}")
        msg_type = CompressedImage if transport == "compressed" else Image
        suffix = "/compressed" if transport == "compressed" else ""
        pubs = {cam: client.node.create_publisher(msg_type, f"/{cam}/image{suffix}", reliable_qos(N + 2))
                for cam in SIZES}
        labels = {cam: client.collect(Image, f"/{cam}/segmentation/labels", reliable_qos(100))[0] for cam in SIZES}

        def make(cam, rgb, stamp):
            return _compressed_msg(rgb, stamp, cam) if transport == "compressed" else image_msg(rgb, stamp, cam)

        warm_up(lambda s: [pubs[c].publish(make(c, frames[c][0], s)) for c in SIZES], list(labels.values()))
        got = {cam: {} for cam in SIZES}
        # Both cameras at once (one take, two sizes), frame by frame: the input subscriptions
        # keep only the last message, so a burst would be thinned out by DDS, not by the node.
        for i in range(N):
            for cam in SIZES:
                pubs[cam].publish(make(cam, frames[cam][i], T0 + 1000 * i + (cam == "b")))
            for cam in SIZES:
                stamp = T0 + 1000 * i + (cam == "b")
                m = labels[cam].wait_for(lambda m, s=stamp: stamp_ns(m.header) == s, 60, f"{cam} frame {i}")
                got[cam][i] = as_array(m)
        node_out = node.output()
    finally:
        if client is not None:
            client.close()
        rc = node.stop(signal.SIGINT)
    assert rc == 0, node.output()
    assert "cuda" in node_out.lower()
    seg = Segmenter.from_checkpoint(str(ckpt), device="cuda")
    for cam, (h, w) in SIZES.items():
        for i, rgb in enumerate(frames[cam]):
            if transport == "compressed":  # the node saw the decoded JPEG, not the original
                data = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])[1]
                rgb = cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1]
            ref = seg.predict(np.ascontiguousarray(rgb))[0].labels
            assert got[cam][i].shape == (h, w)
            # nvJPEG and libjpeg may differ by a grey level here and there
            agree = float((got[cam][i] == ref).mean())
            assert agree >= (0.98 if transport == "compressed" else 0.995), (cam, i, agree)
