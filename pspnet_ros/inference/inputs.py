"""Turn what callers hand us (arrays, tensors, JPEG/PNG bytes) into HxWx3 uint8 frames.

Otherwise raise :class:`~pspnet_ros.errors.InputError` saying exactly what is wrong.

Encoded images are checked before decoding: the header's width x height must be sane and below
a pixel budget, so a 20-byte "decompression bomb" announcing 100000 x 100000 pixels is refused
without allocating anything.
"""

from __future__ import annotations

import logging
import struct
import warnings
from typing import Any, Optional, Tuple

import numpy as np

from ..errors import InputError
from .types import DEFAULT_MAX_PIXELS

log = logging.getLogger(__name__)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SOI = b"\xff\xd8"
# Start-of-frame markers carry the image size; C4 (DHT), C8 (JPG), CC (DAC) share the range
# but are not frames.
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
# Markers without a length field.
_JPEG_STANDALONE = {0x01, 0xD8, 0xD9} | set(range(0xD0, 0xD8))


def _describe(frame: Any) -> str:
    shape = getattr(frame, "shape", None)
    return f"{type(frame).__name__}{'' if shape is None else ' of shape ' + str(tuple(shape))}"


def validate_frame(frame: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> Tuple[int, int]:
    """Check that ``frame`` is an (H, W, 3) uint8 numpy array or torch tensor; return (H, W)."""
    import torch

    if isinstance(frame, np.ndarray):
        dtype = frame.dtype
        ok_dtype = dtype == np.uint8
    elif isinstance(frame, torch.Tensor):
        dtype = frame.dtype
        ok_dtype = dtype == torch.uint8
    else:
        raise InputError(f"frame must be a numpy array or torch tensor, got {type(frame).__name__}")
    shape = tuple(frame.shape)
    if len(shape) == 2:
        raise InputError(f"frame must be HxWx3 (RGB or BGR), got a single-channel {shape} image; "
                         "convert grayscale to 3 channels first")
    if len(shape) != 3:
        raise InputError(f"frame must be HxWx3 (RGB or BGR), got {len(shape)}-D {_describe(frame)}")
    if shape[2] != 3:
        hint = " (drop the alpha channel)" if shape[2] == 4 else ""
        raise InputError(f"frame must have 3 channels, got {shape[2]} (shape {shape}){hint}")
    if shape[0] == 0 or shape[1] == 0:
        raise InputError(f"frame is empty (shape {shape})")
    if not ok_dtype:
        raise InputError(f"frame dtype must be uint8, got {dtype} (shape {shape}); "
                         "scale float images to 0-255 and convert")
    if shape[0] * shape[1] > max_pixels:
        raise InputError(f"frame has {shape[0]}x{shape[1]} = {shape[0] * shape[1]} pixels, "
                         f"more than the limit of {max_pixels}")
    return int(shape[0]), int(shape[1])


def normalize_format(fmt: Optional[str]) -> Optional[str]:
    """Normalize a format name to 'jpeg' or 'png', or None to detect from the data.

    Accepts 'jpeg'/'jpg'/'png' (any case, also ROS strings like 'rgb8; jpeg compressed bgr8'); None
    or 'auto' -> None (detect from the data).
    """
    if fmt is None:
        return None
    f = str(fmt).lower()
    if f in ("", "auto"):
        return None
    if "png" in f:
        return "png"
    if "jpeg" in f or "jpg" in f:
        return "jpeg"
    raise InputError(f"unsupported image format {fmt!r}: expected jpeg or png")


def sniff_format(data: bytes) -> Optional[str]:
    if data[:8] == PNG_SIGNATURE:
        return "png"
    if data[:2] == JPEG_SOI:
        return "jpeg"
    return None


def png_size(data: bytes) -> Tuple[int, int]:
    """(height, width) from a PNG's IHDR chunk."""
    if len(data) < 33:
        raise InputError(f"PNG data truncated: {len(data)} bytes, the header alone needs 33")
    length, ctype = struct.unpack(">I4s", data[8:16])
    if ctype != b"IHDR" or length != 13:
        raise InputError("corrupt PNG: first chunk is not a 13-byte IHDR")
    width, height, depth, color = struct.unpack(">IIBB", data[16:26])
    if width == 0 or height == 0:
        raise InputError(f"corrupt PNG: header says {width}x{height} pixels")
    if depth not in (1, 2, 4, 8, 16) or color not in (0, 2, 3, 4, 6):
        raise InputError(f"corrupt PNG: invalid bit depth {depth} / colour type {color}")
    return height, width


def jpeg_size(data: bytes) -> Tuple[int, int]:
    """(height, width) from a JPEG's start-of-frame segment (walks the marker segments)."""
    n, i = len(data), 2
    while True:
        while i < n and data[i] != 0xFF:  # tolerate garbage between segments, as libjpeg does
            i += 1
        while i < n and data[i] == 0xFF:  # fill bytes
            i += 1
        if i >= n:
            raise InputError(f"corrupt JPEG: no frame header (SOF) in {n} bytes (truncated?)")
        marker = data[i]
        i += 1
        if marker in _JPEG_STANDALONE:
            if marker == 0xD9:
                raise InputError("corrupt JPEG: end of image before any frame header")
            continue
        if i + 2 > n:
            raise InputError(f"JPEG data truncated inside marker 0x{marker:02X}")
        (seg_len,) = struct.unpack(">H", data[i:i + 2])
        if seg_len < 2:
            raise InputError(f"corrupt JPEG: marker 0x{marker:02X} has length {seg_len}")
        if marker in _JPEG_SOF:
            if i + 7 > n:
                raise InputError("JPEG data truncated inside the frame header")
            height, width = struct.unpack(">HH", data[i + 3:i + 7])
            if width == 0 or height == 0:
                raise InputError(f"unsupported JPEG: frame header says {width}x{height} pixels")
            return height, width
        if marker == 0xDA:
            raise InputError("corrupt JPEG: scan data before any frame header")
        i += seg_len


def jpeg_complete(data: bytes) -> bool:
    """Return True if the JPEG ends with an end-of-image marker (trailing padding allowed).

    The GPU decoder only gets complete files; libjpeg on the CPU judges truncated ones itself.
    """
    return data.rfind(b"\xff\xd9", max(0, len(data) - 4096)) >= 0


def encoded_size(data: bytes, fmt: Optional[str] = None,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> Tuple[str, int, int]:
    """Identify and measure encoded image bytes without decoding: returns (fmt, height, width).

    Raises InputError for empty/unknown/truncated data, a declared format that does not match
    the bytes, or more than ``max_pixels`` pixels (decompression bomb).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InputError(f"encoded image must be bytes, got {type(data).__name__}")
    data = bytes(data) if isinstance(data, memoryview) else data
    if len(data) == 0:
        raise InputError("encoded image is empty (0 bytes)")
    declared = normalize_format(fmt)
    actual = sniff_format(data)
    if actual is None:
        raise InputError(f"data is neither JPEG nor PNG (starts with {bytes(data[:8])!r}, "
                         f"{len(data)} bytes)")
    if declared is not None and declared != actual:
        raise InputError(f"format says {declared} but the data is {actual}")
    height, width = png_size(data) if actual == "png" else jpeg_size(data)
    if height * width > max_pixels:
        raise InputError(f"{actual.upper()} announces {width}x{height} = {width * height} pixels, "
                         f"more than the limit of {max_pixels}; refusing to decode "
                         "(decompression bomb?)")
    return actual, height, width


def compressed_image_format(format_field: Optional[str], data: bytes,
                            max_pixels: int = DEFAULT_MAX_PIXELS) -> Tuple[str, int, int]:
    """Check a ``sensor_msgs/CompressedImage`` (the one check, for node, engine and bag tools).

    It checks the ``format`` field (image_transport writes e.g. ``"jpeg"``, ``"png"`` or ``"bgr8;
    jpeg compressed bgr8"``; empty means sniff the bytes; compressedDepth and other codecs are
    refused), the bytes themselves (they must be what the field says) and the decompression-bomb
    limit. Returns ``(fmt, height, width)`` without decoding.
    """
    text = (format_field or "").strip().lower()
    if "compresseddepth" in text:
        raise InputError(f"compressed format {format_field!r} is a depth stream, not a camera image")
    if text == "auto":
        text = ""
    if not text and isinstance(data, (bytes, bytearray)) and data and sniff_format(bytes(data[:8])) is None:
        raise InputError("empty compressed format and the data is neither JPEG nor PNG")
    if text and not any(k in text for k in ("png", "jpeg", "jpg")):
        raise InputError(f"unsupported compressed format {format_field!r}: only JPEG and PNG are decoded")
    return encoded_size(data, text or None, max_pixels)


def decode_cpu(data: bytes, fmt: str, height: int, width: int) -> np.ndarray:
    """Decode to an (H, W, 3) uint8 **BGR** array with OpenCV (libjpeg-turbo / libpng).

    Grayscale, palette, 16-bit and alpha images are converted to 8-bit 3-channel.
    """
    import cv2

    buf = np.frombuffer(data, dtype=np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if img is None:
        raise InputError(f"corrupt {fmt.upper()} data: could not decode {len(data)} bytes "
                         "(truncated or damaged)")
    if img.shape[:2] != (height, width):
        raise InputError(f"corrupt {fmt.upper()}: header says {width}x{height} but decoding gave "
                         f"{img.shape[1]}x{img.shape[0]}")
    return img


def decode_jpeg_device(data: bytes, device: Any) -> Any:
    """Decode a JPEG on ``device`` with nvJPEG (torchvision); returns an (H, W, 3) RGB uint8 tensor view.

    Raises RuntimeError if the GPU decoder fails (callers fall back to the CPU).
    """
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    raw = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    with warnings.catch_warnings():
        # torchvision >= 0.29 deprecates its codecs in favour of torchcodec; nvJPEG still works.
        warnings.simplefilter("ignore", DeprecationWarning)
        chw = decode_jpeg(raw, mode=ImageReadMode.RGB, device=device)
    return chw.permute(1, 2, 0)
