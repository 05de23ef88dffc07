"""Zero-copy conversion between ``sensor_msgs/Image`` fields and numpy arrays (ROS-free).

cv_bridge is not available everywhere (and not as a wheel at all), so the node uses this module.
It works on the plain message fields (``height, width, encoding, step, is_bigendian, data``), so
it is testable without ROS and the same code serves rclpy messages, rosbags messages and tests.

Decoding (message -> frame):

=====================  ==========================================  =============
encoding               result                                      copy?
=====================  ==========================================  =============
rgb8 / bgr8            (H, W, 3) uint8 view of ``data``            no
rgba8 / bgra8          (H, W, 3) uint8 view (alpha skipped)        no
mono8                  gray replicated to 3 channels               yes
bayer_{rggb,bggr,      demosaiced with OpenCV (edge-aware bilinear) yes
gbrg,grbg}8
yuv422 (UYVY),         converted with OpenCV                        yes
yuv422_yuy2 (YUY2)
=====================  ==========================================  =============

Views honour ``step`` (row padding) through numpy strides instead of copying, so they can be
non-contiguous; ``torch.from_numpy`` accepts any positive strides. BGR-ordered frames are
returned as they are with ``bgr=True`` (the engine swaps channels on the device) instead of
copying to reverse them here. ``is_bigendian`` only matters for multi-byte pixels: every accepted
encoding has one byte per channel, so it is ignored for them (as cv_bridge does); 16-bit and
float encodings are rejected with an explanation.

Every problem raises :class:`pspnet_ros.errors.InputError` with a message that names the field
and the numbers, never another exception type.
"""

from __future__ import annotations

import array
import re
from typing import Any, NamedTuple, Optional

import numpy as np

from .errors import InputError

# encoding -> (bytes per pixel, channel count of the raw layout)
_DIRECT = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4}
_BAYER = ("bayer_rggb8", "bayer_bggr8", "bayer_gbrg8", "bayer_grbg8")
_YUV = ("yuv422", "yuv422_yuy2")
SUPPORTED_ENCODINGS = tuple(_DIRECT) + ("mono8",) + _BAYER + _YUV

# Encodings that are well-formed ROS encodings but not camera colour images we can segment.
_REJECTED_HINTS = {
    "mono16": "16-bit mono frames are not supported: publish mono8 or a colour encoding",
    "rgb16": "16-bit colour is not supported: publish rgb8/bgr8",
    "bgr16": "16-bit colour is not supported: publish rgb8/bgr8",
    "rgba16": "16-bit colour is not supported: publish rgba8/bgra8",
    "bgra16": "16-bit colour is not supported: publish rgba8/bgra8",
    "bayer_rggb16": "16-bit Bayer is not supported: publish 8-bit Bayer or a colour encoding",
    "bayer_bggr16": "16-bit Bayer is not supported: publish 8-bit Bayer or a colour encoding",
    "bayer_gbrg16": "16-bit Bayer is not supported: publish 8-bit Bayer or a colour encoding",
    "bayer_grbg16": "16-bit Bayer is not supported: publish 8-bit Bayer or a colour encoding",
    "8uc3": "generic 8UC3 has no channel order: publish rgb8 or bgr8",
    "8uc4": "generic 8UC4 has no channel order: publish rgba8 or bgra8",
    "8uc1": "generic 8UC1: publish mono8",
}

_CV_TYPE = re.compile(r"^(8|16|32|64)([usf])c(\d+)$")

# A sanity bound on claimed sizes: the check on ``len(data)`` already refuses sizes the data
# cannot back, this one refuses real but absurd frames (a 1e8-pixel "camera frame") before any
# conversion allocates three times their size.
MAX_PIXELS = 100_000_000

# ROS Bayer names give the pattern of the first row; OpenCV names the pattern starting at the
# second row and column, so each ROS pattern maps to OpenCV's "opposite" constant (cv_bridge
# uses the same table).
_BAYER_TO_RGB = {
    "bayer_rggb8": "COLOR_BayerBG2RGB",
    "bayer_bggr8": "COLOR_BayerRG2RGB",
    "bayer_gbrg8": "COLOR_BayerGR2RGB",
    "bayer_grbg8": "COLOR_BayerGB2RGB",
}
# ROS "yuv422" is UYVY byte order; "yuv422_yuy2" is YUYV.
_YUV_TO_RGB = {"yuv422": "COLOR_YUV2RGB_UYVY", "yuv422_yuy2": "COLOR_YUV2RGB_YUY2"}


class DecodedImage(NamedTuple):
    """A frame ready for the engine.

    array: (H, W, 3) uint8, possibly a strided view into the message buffer.
    bgr: True when the channel order is BGR (pass ``bgr=True`` to the engine).
    zero_copy: True when ``array`` shares memory with the message data.
    """

    array: np.ndarray
    bgr: bool
    zero_copy: bool


class ImageFields(NamedTuple):
    """The fields of a ``sensor_msgs/Image`` for publishing (``data`` as array('B'))."""

    height: int
    width: int
    encoding: str
    is_bigendian: int
    step: int
    data: array.array


def _as_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InputError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    return int(value)


def _as_bytes(data: Any) -> np.ndarray:
    """Return a 1-D uint8 view of any contiguous bytes-like object (array('B'), bytes, numpy...)."""
    try:
        buf = np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError, BufferError) as exc:
        raise InputError(f"data must be a contiguous bytes-like buffer, got {type(data).__name__}: {exc}") \
            from None
    return buf


def _bytes_per_pixel(encoding: str) -> int:
    if encoding in _DIRECT:
        return _DIRECT[encoding]
    if encoding == "mono8" or encoding in _BAYER:
        return 1
    if encoding in _YUV:
        return 2
    if not encoding:
        raise InputError("missing encoding (empty string); supported: " + ", ".join(SUPPORTED_ENCODINGS))
    hint = _REJECTED_HINTS.get(encoding.lower())
    if hint:
        raise InputError(f"unsupported encoding {encoding!r}: {hint}")
    low = encoding.lower()
    cv_type = _CV_TYPE.match(low)
    if cv_type:
        bits, kind = cv_type.group(1), {"u": "unsigned", "s": "signed", "f": "float"}[cv_type.group(2)]
        raise InputError(f"unsupported encoding {encoding!r}: a {bits}-bit {kind} matrix (depth or raw "
                         "data), not a camera colour frame; publish rgb8, bgr8 or mono8")
    if low in SUPPORTED_ENCODINGS:
        raise InputError(f"unsupported encoding {encoding!r}: encodings are case-sensitive, use {low!r}")
    raise InputError(f"unsupported encoding {encoding!r}; supported: " + ", ".join(SUPPORTED_ENCODINGS))


def _rows_view(height: int, width: int, encoding: str, step: int, is_bigendian: Any,
               data: Any) -> tuple[np.ndarray, int]:
    """Validate the fields and return (H, W, bpp) uint8 view honouring ``step`` + bytes/pixel."""
    height = _as_int("height", height)
    width = _as_int("width", width)
    step = _as_int("step", step)
    if not isinstance(encoding, str):
        raise InputError(f"encoding must be a string, got {type(encoding).__name__}")
    if height <= 0 or width <= 0:
        raise InputError(f"empty image: height={height} width={width}")
    bpp = _bytes_per_pixel(encoding)
    if height * width > MAX_PIXELS:
        raise InputError(f"image too large: {width}x{height} = {height * width} pixels "
                         f"(limit {MAX_PIXELS})")
    row_bytes = width * bpp
    if step < row_bytes:
        raise InputError(f"step {step} is smaller than width*bytes_per_pixel = {width}*{bpp} = "
                         f"{row_bytes} for {encoding}")
    buf = _as_bytes(data)
    expected = step * height
    if buf.size != expected:
        raise InputError(f"data has {buf.size} bytes but step*height = {step}*{height} = {expected} "
                         f"({width}x{height} {encoding})")
    # Rows of `step` bytes, of which the first width*bpp are pixels: a strided view, no copy.
    # Writable exactly when the message buffer is (rclpy's array('B') is): torch warns on
    # read-only arrays. Nothing here or in the engine writes to input frames.
    view = np.lib.stride_tricks.as_strided(buf, shape=(height, width, bpp), strides=(step, bpp, 1))
    return view, bpp


def decode_image(height: int, width: int, encoding: str, step: int, is_bigendian: Any,
                 data: Any) -> DecodedImage:
    """``sensor_msgs/Image`` fields -> (H, W, 3) uint8 frame; zero-copy where the layout allows.

    Raises:
        InputError: unsupported or empty encoding, empty or absurd size, ``step`` too small,
            ``data`` length different from ``step * height``, odd width for YUV 4:2:2.
    """
    view, bpp = _rows_view(height, width, encoding, step, is_bigendian, data)
    if encoding in _DIRECT:
        rgb = view[..., :3] if bpp == 4 else view
        return DecodedImage(rgb, encoding.startswith("bgr"), True)

    import cv2  # only for conversions; the common rgb8/bgr8 path does not need it

    if encoding == "mono8":
        gray = view[..., 0]
        return DecodedImage(np.repeat(gray[..., None], 3, axis=2), False, False)
    if encoding in _BAYER:
        raw = np.ascontiguousarray(view[..., 0])
        return DecodedImage(_cv_convert(cv2, raw, _BAYER_TO_RGB[encoding], encoding), False, False)
    # YUV 4:2:2: two pixels share one chroma pair, so the width must be even.
    if view.shape[1] % 2:
        raise InputError(f"{encoding} needs an even width, got {view.shape[1]}")
    raw = np.ascontiguousarray(view)
    return DecodedImage(_cv_convert(cv2, raw, _YUV_TO_RGB[encoding], encoding), False, False)


def _cv_convert(cv2: Any, raw: np.ndarray, code_name: str, encoding: str) -> np.ndarray:
    try:
        out = cv2.cvtColor(raw, getattr(cv2, code_name))
    except cv2.error as exc:  # sizes OpenCV refuses; report as a bad frame, not a crash
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "conversion failed"
        raise InputError(f"cannot convert {encoding} {raw.shape[1]}x{raw.shape[0]}: {first}") from None
    return out


def image_to_rgb(height: int, width: int, encoding: str, step: int, is_bigendian: Any,
                 data: Any) -> np.ndarray:
    """Like :func:`decode_image` but always RGB order: (H, W, 3) uint8 (a copy only for BGR)."""
    img = decode_image(height, width, encoding, step, is_bigendian, data)
    return np.ascontiguousarray(img.array[..., ::-1]) if img.bgr else img.array


def encode_image(image: np.ndarray, encoding: Optional[str] = None) -> ImageFields:
    """Numpy -> ``sensor_msgs/Image`` fields: (H, W) uint8 -> mono8, (H, W, 3) uint8 -> rgb8.

    ``encoding`` overrides the default (e.g. "bgr8" for a BGR array, "rgba8" for (H, W, 4)).
    One copy into ``array('B')``, which is what rclpy messages store without re-checking
    every byte (assigning ``bytes`` makes rclpy validate each value in Python).
    """
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise InputError(f"expected a uint8 numpy array, got {getattr(image, 'dtype', type(image).__name__)}")
    if image.ndim == 2:
        channels, default = 1, "mono8"
    elif image.ndim == 3 and image.shape[2] in (1, 3, 4):
        channels = image.shape[2]
        default = {1: "mono8", 3: "rgb8", 4: "rgba8"}[channels]
    else:
        raise InputError(f"cannot publish an array of shape {image.shape}: need (H, W), (H, W, 3) or (H, W, 4)")
    encoding = encoding or default
    expected = {"mono8": 1, "rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4}.get(encoding)
    if expected != channels:
        raise InputError(f"encoding {encoding!r} does not fit an array of shape {image.shape}")
    height, width = image.shape[:2]
    if height == 0 or width == 0:
        raise InputError(f"cannot publish an empty image of shape {image.shape}")
    data = array.array("B")
    data.frombytes(np.ascontiguousarray(image).data)
    return ImageFields(height, width, encoding, 0, width * channels, data)
