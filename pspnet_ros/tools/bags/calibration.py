"""Camera calibration for the bag tools (ROS-free).

Pinhole intrinsics (KITTI's P2 or a default field of view), CameraInfo messages from them, and
scaling with the package's one camera_info contract (:mod:`pspnet_ros.camera_info`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import numpy as np

from pspnet_ros.camera_info import scale_camera_info_fields

from .messages import CAMERA_INFO, header, typestore


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole model of a camera at ``width`` x ``height``; ``d`` = plumb_bob k1 k2 p1 p2 k3."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    d: Tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 0.0)
    tx: float = 0.0  # P[0,3] = -fx * baseline for the right camera of a stereo pair
    source: str = "default"

    def scaled(self, width: int, height: int) -> "Intrinsics":
        """Return the same camera resampled to ``width`` x ``height`` (ROS convention: K, P scale)."""
        sx, sy = width / self.width, height / self.height
        return Intrinsics(width, height, self.fx * sx, self.fy * sy, self.cx * sx, self.cy * sy,
                          self.d, self.tx * sx, self.source)


# KITTI's left colour camera (P2 of the 2011_09_26 calibration, which the road benchmark's
# um/umm/uu frames share up to a pixel): rectified images, so no distortion; P2[0,3] is the
# offset of camera 2 from the reference camera 0.
KITTI_P2 = Intrinsics(1242, 375, 721.5377, 721.5377, 609.5593, 172.854, tx=44.85728,
                      source="kitti_p2")
# Anything else: a 60 degree horizontal field of view, square pixels, centred principal point.
DEFAULT_HFOV_DEG = 60.0


def default_intrinsics(width: int, height: int) -> Intrinsics:
    fx = (width / 2.0) / np.tan(np.radians(DEFAULT_HFOV_DEG) / 2.0)
    return Intrinsics(width, height, float(fx), float(fx), width / 2.0, height / 2.0,
                      source=f"default_hfov{DEFAULT_HFOV_DEG:g}")


def camera_info_msg(intr: Intrinsics, stamp: int, frame_id: str):
    t = typestore().types
    k = np.array([intr.fx, 0, intr.cx, 0, intr.fy, intr.cy, 0, 0, 1], dtype=np.float64)
    p = np.array([intr.fx, 0, intr.cx, intr.tx, 0, intr.fy, intr.cy, 0, 0, 0, 1, 0],
                 dtype=np.float64)
    return t[CAMERA_INFO](
        header=header(stamp, frame_id), height=intr.height, width=intr.width,
        distortion_model="plumb_bob", d=np.array(intr.d, dtype=np.float64), k=k,
        r=np.eye(3, dtype=np.float64).reshape(-1), p=p, binning_x=0, binning_y=0,
        roi=t["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0,
                                                 do_rectify=False))


def scale_camera_info(msg, image_size: Tuple[int, int], out_size: Tuple[int, int]):
    """Return a rosbags CameraInfo (header kept) for images resized from ``image_size`` to ``out_size``.

    Both sizes are (h, w); the scaling is the node's,
    :func:`pspnet_ros.camera_info.scale_camera_info_fields`.
    """
    t = typestore().types
    f = scale_camera_info_fields(msg, image_size, out_size)
    roi = t["sensor_msgs/msg/RegionOfInterest"](x_offset=f.roi_x_offset, y_offset=f.roi_y_offset,
                                                height=f.roi_height, width=f.roi_width,
                                                do_rectify=f.roi_do_rectify)
    return t[CAMERA_INFO](header=msg.header, height=f.height, width=f.width,
                          distortion_model=f.distortion_model, d=f.d, k=f.k, r=f.r, p=f.p,
                          binning_x=f.binning_x, binning_y=f.binning_y, roi=roi)


