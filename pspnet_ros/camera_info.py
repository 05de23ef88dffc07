"""The one camera_info contract: which images a calibration describes, and how it scales.

ROS-free and message-agnostic: ``info`` is any object with the ``sensor_msgs/CameraInfo`` fields
(an rclpy message in the node, a ``rosbags`` message in ``pspnet bag``), so the node and the bag
tools publish the same calibration for the same input. The convention is image_proc's resize:
K and the first two rows of P scale with the image, D and R do not, width/height/ROI follow the
new size, binning is kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Tuple

import numpy as np

from .errors import InputError


@dataclass(frozen=True)
class ScaledCameraInfo:
    """Plain field values of a scaled CameraInfo (header excluded: it is the image's)."""

    height: int
    width: int
    distortion_model: str
    d: np.ndarray
    k: np.ndarray
    r: np.ndarray
    p: np.ndarray
    binning_x: int
    binning_y: int
    roi_x_offset: int
    roi_y_offset: int
    roi_height: int
    roi_width: int
    roi_do_rectify: bool


def camera_info_size(info: Any) -> Tuple[int, int]:
    """(height, width) of the images that ``info`` describes, after ROI and binning."""
    bx = info.binning_x or 1
    by = info.binning_y or 1
    roi = info.roi
    w = roi.width if roi.width else info.width
    h = roi.height if roi.height else info.height
    return h // by, w // bx


def scale_camera_info_fields(info: Any, image_size: Tuple[int, int],
                             out_size: Tuple[int, int]) -> ScaledCameraInfo:
    """Fields of ``info`` for images resized from ``image_size`` to ``out_size`` (both (h, w)).

    Raises InputError when ``info`` is uncalibrated (width/height 0) or describes images of
    another size than ``image_size`` (the calibration belongs to another stream).
    """
    if not info.width or not info.height:
        raise InputError("camera_info has width/height 0 (uncalibrated), cannot scale it")
    if camera_info_size(info) != tuple(image_size):
        ih, iw = camera_info_size(info)
        raise InputError(f"camera_info describes {iw}x{ih} images but the image is "
                         f"{image_size[1]}x{image_size[0]}")
    sy = out_size[0] / image_size[0]
    sx = out_size[1] / image_size[1]
    k = np.asarray(info.k, dtype=np.float64).reshape(3, 3).copy()
    k[0] *= sx
    k[1] *= sy
    p = np.asarray(info.p, dtype=np.float64).reshape(3, 4).copy()
    p[0] *= sx
    p[1] *= sy
    roi = info.roi
    return ScaledCameraInfo(
        height=int(round(info.height * sy)), width=int(round(info.width * sx)),
        distortion_model=str(info.distortion_model), d=np.asarray(info.d, dtype=np.float64),
        k=k.ravel(), r=np.asarray(info.r, dtype=np.float64), p=p.ravel(),
        binning_x=int(info.binning_x), binning_y=int(info.binning_y),
        roi_x_offset=int(round(roi.x_offset * sx)), roi_y_offset=int(round(roi.y_offset * sy)),
        roi_height=int(round(roi.height * sy)), roi_width=int(round(roi.width * sx)),
        roi_do_rectify=bool(roi.do_rectify))
