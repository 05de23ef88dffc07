"""sensor_msgs <-> numpy, wrapping the ROS-free :mod:`pspnet_ros.image_codec`."""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

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
    """An Image message with ``header`` (shared, not copied) and one copy of the pixels."""
    f = encode_image(array, encoding)
    return Image(header=header, height=f.height, width=f.width, encoding=f.encoding,
                 is_bigendian=f.is_bigendian, step=f.step, data=f.data)


def compressed_format(msg: CompressedImage) -> str:
    """'jpeg' or 'png' from a CompressedImage ``format`` field.

    image_transport writes e.g. ``"jpeg"``, ``"png"`` or ``"bgr8; jpeg compressed bgr8"``;
    compressedDepth and anything else are refused.
    """
    text = (msg.format or "").lower()
    if "compresseddepth" in text:
        raise InputError(f"compressed format {msg.format!r} is a depth stream, not a camera image")
    if "jpeg" in text or "jpg" in text:
        return "jpeg"
    if "png" in text:
        return "png"
    if not text.strip():
        # image_transport always fills it; an empty format gets sniffed from the magic bytes.
        head = bytes(msg.data[:8])
        if head.startswith(b"\xff\xd8"):
            return "jpeg"
        if head.startswith(b"\x89PNG"):
            return "png"
        raise InputError("empty compressed format and the data is neither JPEG nor PNG")
    raise InputError(f"unsupported compressed format {msg.format!r}: only JPEG and PNG are decoded")


def camera_info_size(info: CameraInfo) -> Tuple[int, int]:
    """(height, width) of the images that ``info`` describes, after ROI and binning."""
    bx = info.binning_x or 1
    by = info.binning_y or 1
    roi = info.roi
    w = roi.width if roi.width else info.width
    h = roi.height if roi.height else info.height
    return h // by, w // bx


def scale_camera_info(info: CameraInfo, image_size: Tuple[int, int], out_size: Tuple[int, int],
                      header: Header) -> CameraInfo:
    """``info`` for images resized from ``image_size`` to ``out_size`` (both (h, w)).

    Same convention as image_proc's resize: K and P scale with the image, the distortion model
    is unchanged, width/height/ROI follow the new size. Raises InputError when ``info``
    does not describe images of ``image_size`` (the calibration belongs to another stream).
    """
    if info.width == 0 or info.height == 0:
        raise InputError("camera_info has width/height 0 (uncalibrated), cannot scale it")
    if camera_info_size(info) != tuple(image_size):
        ih, iw = camera_info_size(info)
        raise InputError(f"camera_info describes {iw}x{ih} images but the image is "
                         f"{image_size[1]}x{image_size[0]}")
    sy = out_size[0] / image_size[0]
    sx = out_size[1] / image_size[1]
    out = CameraInfo()
    out.header = header
    out.height = int(round(info.height * sy))
    out.width = int(round(info.width * sx))
    out.distortion_model = info.distortion_model
    out.d = info.d
    k = np.asarray(info.k, dtype=np.float64).reshape(3, 3).copy()
    k[0] *= sx
    k[1] *= sy
    out.k = k.ravel()
    out.r = info.r
    p = np.asarray(info.p, dtype=np.float64).reshape(3, 4).copy()
    p[0] *= sx
    p[1] *= sy
    out.p = p.ravel()
    out.binning_x = info.binning_x
    out.binning_y = info.binning_y
    out.roi.x_offset = int(round(info.roi.x_offset * sx))
    out.roi.y_offset = int(round(info.roi.y_offset * sy))
    out.roi.width = int(round(info.roi.width * sx))
    out.roi.height = int(round(info.roi.height * sy))
    out.roi.do_rectify = info.roi.do_rectify
    return out
