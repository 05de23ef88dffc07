"""One contract each: the node (rclpy messages) and ``pspnet bag`` (rosbags messages).

They scale camera_info identically, check compressed images identically, and share class_info.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo, CompressedImage
from std_msgs.msg import Header

from pspnet_ros.errors import InputError
from pspnet_ros.ros import conversions
from pspnet_ros.tools.bags import calibration, messages


def _infos(width=1242, height=375, roi=(0, 0, 0, 0), binning=(0, 0)):
    """Return the same calibration as an rclpy message and as a rosbags message."""
    k = [721.5, 0.0, 609.6, 0.0, 721.5, 172.9, 0.0, 0.0, 1.0]
    p = [721.5, 0.0, 609.6, 44.9, 0.0, 721.5, 172.9, 0.0, 0.0, 0.0, 1.0, 0.0]
    d = [0.1, -0.2, 0.001, 0.002, 0.0]
    r = np.eye(3).ravel().tolist()
    ros = CameraInfo()
    ros.header = Header(stamp=Time(sec=1, nanosec=2), frame_id="cam")
    ros.width, ros.height, ros.distortion_model = width, height, "plumb_bob"
    ros.k, ros.p, ros.d, ros.r = k, p, d, r
    ros.binning_x, ros.binning_y = binning
    ros.roi.x_offset, ros.roi.y_offset, ros.roi.width, ros.roi.height = roi
    t = messages.typestore().types
    bag = t[messages.CAMERA_INFO](
        header=messages.header(1_000_000_002, "cam"), height=height, width=width,
        distortion_model="plumb_bob", d=np.array(d), k=np.array(k), r=np.array(r), p=np.array(p),
        binning_x=binning[0], binning_y=binning[1],
        roi=t["sensor_msgs/msg/RegionOfInterest"](x_offset=roi[0], y_offset=roi[1], width=roi[2],
                                                 height=roi[3], do_rectify=False))
    return ros, bag


@pytest.mark.parametrize("kw,image_size,out_size", [
    ({}, (375, 1242), (188, 621)),
    ({}, (375, 1242), (375, 1242)),
    ({"roi": (100, 50, 600, 300)}, (300, 600), (150, 300)),
    ({"binning": (2, 2)}, (187, 621), (94, 311)),
])
def test_node_and_bag_scale_camera_info_identically(kw, image_size, out_size):
    ros, bag = _infos(**kw)
    a = conversions.scale_camera_info(ros, image_size, out_size, ros.header)
    b = calibration.scale_camera_info(bag, image_size, out_size)
    assert (a.height, a.width) == (b.height, b.width)
    for name in ("k", "p", "d", "r"):
        np.testing.assert_allclose(np.asarray(getattr(a, name)), np.asarray(getattr(b, name)), err_msg=name)
    for name in ("x_offset", "y_offset", "width", "height", "do_rectify"):
        assert getattr(a.roi, name) == getattr(b.roi, name), name
    assert (a.binning_x, a.binning_y, a.distortion_model) == (b.binning_x, b.binning_y, b.distortion_model)
    if image_size != out_size:
        assert a.k[0] == pytest.approx(721.5 * out_size[1] / image_size[1])


def test_both_refuse_a_calibration_of_another_stream():
    ros, bag = _infos()
    with pytest.raises(InputError, match="describes 1242x375"):
        conversions.scale_camera_info(ros, (480, 640), (240, 320), ros.header)
    with pytest.raises(InputError, match="describes 1242x375"):
        calibration.scale_camera_info(bag, (480, 640), (240, 320))


def _jpeg(h=40, w=60):
    return cv2.imencode(".jpg", np.zeros((h, w, 3), np.uint8))[1].tobytes()


def _bomb_png(h=30000, w=30000):
    """Return a PNG whose header announces 900 Mpx (IHDR only: never decodable, never decoded)."""
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk + b"\x00" * 16


@pytest.mark.parametrize("fmt,data,ok", [
    ("jpeg", _jpeg(), "jpeg"),
    ("bgr8; jpeg compressed bgr8", _jpeg(), "jpeg"),
    ("", _jpeg(), "jpeg"),
    ("png", _jpeg(), "says png"),
    ("16UC1; compressedDepth png", _jpeg(), "depth stream"),
    ("tiff", _jpeg(), "unsupported compressed format"),
    ("png", _bomb_png(), "decompression bomb"),
], ids=["jpeg", "image_transport", "empty", "mismatch", "depth", "tiff", "bomb"])
def test_node_and_bag_check_compressed_images_identically(fmt, data, ok):
    ros = CompressedImage(format=fmt, data=list(data))
    bag = messages.typestore().types[messages.COMPRESSED](header=messages.header(1, "cam"), format=fmt,
                                              data=np.frombuffer(data, np.uint8))
    if ok == "jpeg":
        assert conversions.compressed_format(ros) == messages.compressed_format(bag) == "jpeg"
        assert messages.decode_compressed(bag).shape == (40, 60, 3)
        return
    for check in (lambda: conversions.compressed_format(ros), lambda: messages.compressed_format(bag),
                  lambda: messages.decode_compressed(bag)):
        with pytest.raises(InputError, match=ok):
            check()


def test_class_info_has_one_home():
    from pspnet_ros.class_info import class_info_json
    from pspnet_ros.ros import outputs
    from pspnet_ros.tools.bags import process

    assert process.class_info_json is class_info_json and outputs.class_info_json is class_info_json
    info = json.loads(class_info_json({"classes": ["a", "b"], "palette": [[1, 2, 3], [4, 5, 6]],
                                       "dataset": "x", "drivable_classes": ["b"]}))
    assert info["classes"] == ["a", "b"] and info["drivable_classes"] == ["b"]
