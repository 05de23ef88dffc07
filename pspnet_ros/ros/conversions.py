"""sensor_msgs <-> numpy, wrapping the ROS-free :mod:`pspnet_ros.image_codec`."""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from ..camera_info import scale_camera_info_fields
from ..errors import InputError
from ..image_codec import DecodedImage, decode_image, encode_image


def image_to_numpy(msg: Image) -> DecodedImage:
    """(H, W, 3) uint8 frame from an Image message, a view of ``msg.data`` where possible.

    Raises:
        InputError: unsupported encoding or inconsistent sizes (see image_codec).
    """
    return decode_image(msg.height, msg.width, msg.encoding, msg.step, msg.is_bigendian, msg.data)


def check_header(header: Header) -> None:
    """Refuse headers that outputs cannot carry usefully (every output copies the input header).

    A negative or non-normalized stamp cannot be represented as a ROS time (rclcpp::Time
    throws on it downstream); a zero stamp or an empty frame_id leaves the outputs impossible to
    match with the image, TF or other sensors. Drivers must set both (``ros2 topic pub`` with an
    empty header is the usual cause).

    Raises:
        InputError: with the field and what to do.
    """
    sec, nanosec = header.stamp.sec, header.stamp.nanosec
    if sec < 0:
        raise InputError(f"negative stamp {sec}.{nanosec:09d}: header.stamp must be a time since the epoch "
                         "(or since the simulation started)")
    if nanosec >= 1_000_000_000:
        raise InputError(f"stamp nanosec {nanosec} is not below 1e9 (stamp not normalized): carry whole "
                         "seconds into stamp.sec")
    if sec == 0 and nanosec == 0:
        raise InputError("no stamp (header.stamp is 0): the camera driver must stamp each frame with its "
                         "capture time; outputs carry the input stamp")
    if not header.frame_id:
        raise InputError("empty header.frame_id: the camera driver must name the camera's frame; outputs "
                         "carry the input frame_id")


def numpy_to_image(array: np.ndarray, encoding: Optional[str], header: Header) -> Image:
    """Return an Image message with ``header`` (shared, not copied) and one copy of the pixels."""
    f = encode_image(array, encoding)
    return Image(header=header, height=f.height, width=f.width, encoding=f.encoding,
                 is_bigendian=f.is_bigendian, step=f.step, data=f.data)


def compressed_format(msg: CompressedImage, data: Optional[bytes] = None,
                      max_pixels: Optional[int] = None) -> str:
    """Return 'jpeg' or 'png' for a CompressedImage, checked.

    Checked by :func:`pspnet_ros.inference.inputs.compressed_image_format`: its format field, its
    bytes (``data``, when the caller already copied them out of the message) and the
    decompression-bomb limit.
    """
    from ..inference.inputs import DEFAULT_MAX_PIXELS, compressed_image_format

    payload = bytes(msg.data) if data is None else data
    return compressed_image_format(msg.format, payload, max_pixels or DEFAULT_MAX_PIXELS)[0]


def scale_camera_info(info: CameraInfo, image_size: Tuple[int, int], out_size: Tuple[int, int],
                      header: Header) -> CameraInfo:
    """Return ``info`` for images resized from ``image_size`` to ``out_size``, stamped with ``header``.

    Both sizes are (h, w); the scaling is :func:`pspnet_ros.camera_info.scale_camera_info_fields`.
    """
    f = scale_camera_info_fields(info, image_size, out_size)
    out = CameraInfo()
    out.header = header
    out.height, out.width = f.height, f.width
    out.distortion_model = f.distortion_model
    out.d, out.k, out.r, out.p = f.d, f.k, f.r, f.p
    out.binning_x, out.binning_y = f.binning_x, f.binning_y
    out.roi.x_offset, out.roi.y_offset = f.roi_x_offset, f.roi_y_offset
    out.roi.width, out.roi.height = f.roi_width, f.roi_height
    out.roi.do_rectify = f.roi_do_rectify
    return out
