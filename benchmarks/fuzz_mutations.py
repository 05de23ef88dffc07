"""Seeded, structure-aware mutants of sensor_msgs Image, CompressedImage and CameraInfo.

Shared by the fuzz test (test/ros/test_fuzz.py) and the long run (benchmarks/fuzz.py); the node
never imports it. Each mutant starts from a valid message and breaks one to three of its fields
the way a broken driver or a hostile publisher would (wrong encoding, swapped or absurd sizes,
step and data length that disagree, odd headers; for compressed frames flipped, truncated or
re-sized JPEG/PNG bytes and wrong format strings; for camera_info sizes, ROI, binning, array
lengths, NaN/inf). Some mutants stay valid (a 1x1 frame, a padded step): the node must process
those, so they exercise the per-size paths of the engine too.

Why a seeded random mutator and not hypothesis: the property under test is aggregate (memory
after 100,000 messages, every good frame answered), so shrinking a failing example does not
apply, and hypothesis' example database and health checks add nothing to a stream sent to
another process. Mutant ``i`` of seed ``s`` is drawn from ``random.Random(f"{s}:{kind}:{i}")``
alone, so any single mutant can be regenerated from the numbers a failing run prints.

Message classes are imported lazily (``sensor_msgs``), so the ``*_fields`` functions also run
without ROS.
"""

from __future__ import annotations

import array
import math
import random
import struct
from typing import Any, Dict, List, Tuple

import numpy as np

ENCODINGS_OK = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "bayer_rggb8", "bayer_bggr8", "bayer_gbrg8",
                "bayer_grbg8", "yuv422", "yuv422_yuy2")
ENCODINGS_BAD = ("", "RGB8", "Rgb8", "mono16", "rgb16", "bgra16", "bayer_rggb16", "8UC3", "8UC1", "16UC1",
                 "32FC1", "64FC3", "hsv8", "jpeg", "rgb8 ", " rgb8", "rgb8\x00", "ümlaut8", "x" * 300,
                 "bayer_xyzw8", "yuv420", "nv12")
BPP = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "bayer_rggb8": 1, "bayer_bggr8": 1,
       "bayer_gbrg8": 1, "bayer_grbg8": 1, "yuv422": 2, "yuv422_yuy2": 2}
HUGE = (2 ** 31 - 1, 2 ** 32 - 1, 65536, 100_001, 10_000)
FORMATS_OK = ("jpeg", "png", "bgr8; jpeg compressed bgr8", "rgb8; png compressed rgb8", "", "JPEG", "jpg")
FORMATS_BAD = ("16UC1; compressedDepth png", "compressedDepth", "tiff", "webp", "h264", "raw", "auto",
               "x" * 200, "png; jpeg", "ümlaut")
# Half the mutants start from a small frame (fast to send), half from a camera-sized one: the
# allocator sees the message and frame sizes a real camera produces, and valid-but-odd mutants
# reach the engine at many distinct sizes.
BASE_H, BASE_W = 24, 32
CAMERA_SIZES = ((375, 1242), (370, 1224), (480, 640), (720, 1280), (188, 621), (240, 320))
MAX_DATA = 1280 * 720 * 4 + 4096
_POOL = np.random.default_rng(0).bytes(MAX_DATA)  # pixel bytes: their values do not matter


def _base_size(rng: random.Random) -> Tuple[int, int]:
    r = rng.random()
    if r < 0.5:
        return rng.randint(1, BASE_H), rng.randint(1, BASE_W)
    if r < 0.75:
        return rng.choice(CAMERA_SIZES)
    return rng.randint(16, 720), rng.randint(16, 1280)


def _header(rng: random.Random, i: int) -> Dict[str, Any]:
    """Return a valid header (stamp from the mutant index), or, one time in ten, a broken one."""
    sec, nanosec, frame_id = 1_000_000 + i // 1000, (i % 1000) * 1_000_000, "fuzz_camera"
    r = rng.random()
    if r < 0.1:
        choice = rng.randrange(6)
        if choice == 0:
            sec, nanosec = 0, 0
        elif choice == 1:
            sec = -rng.randrange(1, 2 ** 31)
        elif choice == 2:
            nanosec = rng.randrange(1_000_000_000, 2 ** 32)
        elif choice == 3:
            frame_id = ""
        elif choice == 4:
            frame_id = "f" * rng.choice((256, 4096))
        else:
            frame_id = "caméra/ü\u2603"
    return {"sec": sec, "nanosec": nanosec, "frame_id": frame_id}


def image_fields(seed: int, i: int) -> Tuple[str, Dict[str, Any]]:
    """(mutation name, Image fields) of mutant ``i``: height, width, encoding, is_bigendian, step, data, header."""
    rng = random.Random(f"{seed}:image:{i}")
    enc = rng.choice(ENCODINGS_OK)
    h, w = _base_size(rng)
    if enc.startswith("yuv"):
        w += w % 2
    step = w * BPP[enc]
    f: Dict[str, Any] = {"height": h, "width": w, "encoding": enc, "is_bigendian": 0, "step": step}
    data_len = step * h
    names: List[str] = []
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        m = rng.randrange(9)
        if m == 0:
            names.append("encoding")
            f["encoding"] = rng.choice(ENCODINGS_BAD + ENCODINGS_OK)
        elif m == 1:
            names.append("size_zero")
            f[rng.choice(("height", "width"))] = 0
        elif m == 2:
            names.append("size_huge")
            f[rng.choice(("height", "width"))] = rng.choice(HUGE)
        elif m == 3:
            names.append("size_swapped")
            f["height"], f["width"] = f["width"], f["height"]
        elif m == 4:
            names.append("size_one")  # still consistent: a valid 1xN / Nx1 / 1x1 frame
            f["height"] = 1 if rng.random() < 0.7 else f["height"]
            f["width"] = 1 if f["height"] != 1 or rng.random() < 0.5 else f["width"]
            f["step"] = f["width"] * BPP[enc] if not enc.startswith("yuv") else 2 * f["width"]
            data_len = f["step"] * f["height"]
        elif m == 5:
            names.append("step")
            f["step"] = rng.choice((0, 1, step - 1, step + 1, step + rng.randrange(1, 64), 2 * step,
                                    2 ** 32 - 1, rng.randrange(0, 4 * step + 2)))
            if rng.random() < 0.5 and f["step"] < 4 * step + 2:  # padded rows: a valid layout
                data_len = f["step"] * f["height"]
        elif m == 6:
            names.append("data_length")
            data_len = rng.choice((0, 1, max(data_len - 1, 0), data_len + 1, data_len // 2, data_len * 2,
                                   rng.randrange(0, data_len * 2 + 2)))
        elif m == 7:
            names.append("endianness")
            f["is_bigendian"] = rng.choice((1, 255, 2))
        else:
            names.append("header")
    f["header"] = _header(rng, i) if "header" not in names else _broken_header(rng)
    f["data"] = _POOL[:min(data_len, MAX_DATA)]
    return "+".join(sorted(set(names))), f


def _broken_header(rng: random.Random) -> Dict[str, Any]:
    h = _header(random.Random(rng.random()), 0)
    choice = rng.randrange(4)
    if choice == 0:
        h["sec"], h["nanosec"] = 0, 0
    elif choice == 1:
        h["sec"] = -1
    elif choice == 2:
        h["nanosec"] = 1_000_000_000
    else:
        h["frame_id"] = ""
    return h


def _png(frame: np.ndarray) -> bytes:
    import cv2

    return cv2.imencode(".png", frame)[1].tobytes()


def _jpeg(frame: np.ndarray) -> bytes:
    import cv2

    return cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes()


_ENCODED: Dict[str, bytes] = {}


ENCODED_SIZES = ((BASE_H, BASE_W), (375, 1242), (480, 640), (188, 621), (97, 301))


def base_encoded(fmt: str, size: Tuple[int, int] = (BASE_H, BASE_W)) -> bytes:
    """Return a valid JPEG or PNG of ``size`` (h, w) (a noisy gradient), made once per format and size."""
    key = f"{fmt}:{size[0]}x{size[1]}"
    if key not in _ENCODED:
        y, x = np.mgrid[0:size[0], 0:size[1]]
        frame = np.stack([x * 7 % 256, y * 11 % 256, (x + y) * 5 % 256], axis=2).astype(np.uint8)
        frame ^= np.frombuffer(_POOL[:frame.size], np.uint8).reshape(frame.shape) & 15
        _ENCODED[key] = _jpeg(frame) if fmt == "jpeg" else _png(frame)
    return _ENCODED[key]


def _resize_header(data: bytearray, fmt: str, h: int, w: int) -> None:
    """Rewrite the size in the JPEG SOF0 or PNG IHDR (the CRC is left stale for PNG)."""
    if fmt == "png":
        data[16:24] = struct.pack(">II", w, h)
        return
    i = data.find(b"\xff\xc0")
    if i >= 0:
        data[i + 5:i + 9] = struct.pack(">HH", h & 0xFFFF, w & 0xFFFF)


def compressed_fields(seed: int, i: int) -> Tuple[str, Dict[str, Any]]:
    """(mutation name, CompressedImage fields) of mutant ``i``: format, data, header."""
    rng = random.Random(f"{seed}:compressed:{i}")
    fmt = rng.choice(("jpeg", "png"))
    size = rng.choice(ENCODED_SIZES)
    data = bytearray(base_encoded(fmt, size))
    field = rng.choice(FORMATS_OK[:4]) if fmt == "jpeg" or rng.random() < 0.5 else "png"
    if fmt == "png" and "jpeg" in field:
        field = "png"
    names: List[str] = []
    for _ in range(rng.choice((1, 1, 2))):
        m = rng.randrange(9)
        if m == 0:
            names.append("byte_flips")
            for _ in range(rng.randint(1, 16) if data else 0):
                pos = rng.randrange(len(data))
                data[pos] ^= 1 << rng.randrange(8)
        elif m == 1:
            names.append("truncated")
            data = data[:rng.randrange(0, len(data) + 1)]
        elif m == 2:
            names.append("header_size")  # absurd (bomb), zero or merely wrong sizes
            _resize_header(data, fmt, rng.choice((0, 1, 65535, 40_000, rng.randrange(1, 200))),
                           rng.choice((0, 1, 65535, 40_000, rng.randrange(1, 200))))
        elif m == 3:
            names.append("format_field")
            field = rng.choice(FORMATS_OK + FORMATS_BAD)
        elif m == 4:
            names.append("garbage")
            data = bytearray(rng.randbytes(rng.randrange(0, 2048)))
        elif m == 5:
            names.append("appended")
            data += rng.randbytes(rng.randrange(1, 512))
        elif m == 6:
            names.append("empty")
            data = bytearray()
        elif m == 7:
            names.append("other_format")  # the bytes of the other format, field unchanged
            data = bytearray(base_encoded("png" if fmt == "jpeg" else "jpeg", size))
        else:
            names.append("header")
    header = _header(rng, i) if "header" not in names else _broken_header(rng)
    return "+".join(sorted(set(names))), {"format": field, "data": bytes(data), "header": header}


def camera_info_fields(seed: int, i: int, height: int, width: int) -> Tuple[str, Dict[str, Any]]:
    """(mutation name, CameraInfo fields) of mutant ``i`` for images of ``height`` x ``width``."""
    rng = random.Random(f"{seed}:camera_info:{i}")
    k = [500.0, 0.0, width / 2, 0.0, 500.0, height / 2, 0.0, 0.0, 1.0]
    p = [500.0, 0.0, width / 2, 0.0, 0.0, 500.0, height / 2, 0.0, 0.0, 0.0, 1.0, 0.0]
    f: Dict[str, Any] = {"height": height, "width": width, "distortion_model": "plumb_bob", "d": [0.0] * 5,
                         "k": k, "r": [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0], "p": p, "binning_x": 0, "binning_y": 0,
                         "roi": (0, 0, 0, 0, False)}
    m = rng.randrange(8)
    name = ("size", "zero_size", "roi", "binning", "d_length", "non_finite", "distortion_model", "header")[m]
    if m == 0:
        f["height"], f["width"] = rng.choice(((width, height), (height + 1, width), (2 ** 32 - 1, 2 ** 32 - 1),
                                              (rng.randrange(1, 5000), rng.randrange(1, 5000))))
    elif m == 1:
        f["height"], f["width"] = rng.choice(((0, 0), (0, width), (height, 0)))
    elif m == 2:
        f["roi"] = (rng.randrange(0, 2 ** 32), rng.randrange(0, 2 ** 32), rng.randrange(0, 2 ** 32),
                    rng.randrange(0, 2 ** 32), rng.random() < 0.5)
    elif m == 3:
        f["binning_x"], f["binning_y"] = rng.choice(((2, 2), (2 ** 32 - 1, 1), (0, 7), (3, 0)))
    elif m == 4:
        f["d"] = [rng.uniform(-1, 1) for _ in range(rng.choice((0, 1, 4, 8, 14, 100)))]
    elif m == 5:
        bad = rng.choice((math.nan, math.inf, -math.inf, 1e308, 0.0))
        f[rng.choice(("k", "p"))][rng.randrange(9)] = bad
    elif m == 6:
        f["distortion_model"] = rng.choice(("", "rational_polynomial", "equidistant", "x" * 500, "ü"))
    header = _header(rng, i) if m != 7 else _broken_header(rng)
    f["header"] = header
    return name, f


def good_frame(i: int, height: int = 96, width: int = 320) -> np.ndarray:
    """Return a valid (H, W, 3) uint8 frame, different per ``i`` (a moving gradient)."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([(x + i) % 256, y * 2 % 256, (x + y + 3 * i) % 256], axis=2).astype(np.uint8)


def largest_fields(transport: str) -> List[Dict[str, Any]]:
    """Return valid frames as large as the mutants that the node accepts can be (headers to fill in).

    Raw: 720x1280 (the largest base size; the data must match the size). Compressed: a JPEG whose
    frame header was rewritten to 200x40000 or 40000x200 (the largest ``header_size`` mutants that
    still decode: 8 megapixels, under the node's 50-megapixel limit). Sending these first puts
    the allocator's high-water mark for one frame into the warm-up.
    """
    if transport == "raw":
        return [{"height": 720, "width": 1280, "encoding": enc, "is_bigendian": 0, "step": 1280 * BPP[enc],
                 "data": _POOL[:720 * 1280 * BPP[enc]]} for enc in ("rgba8", "rgb8", "yuv422", "bayer_rggb8")]
    out = []
    for h, w in ((200, 40000), (40000, 200)):
        data = bytearray(base_encoded("jpeg", (375, 1242)))
        _resize_header(data, "jpeg", h, w)
        out.append({"format": "jpeg", "data": bytes(data)})
    return out


# ------------------------------------------------------------------ messages (need sensor_msgs)

def _fill_header(msg: Any, h: Dict[str, Any]) -> None:
    msg.header.stamp.sec, msg.header.stamp.nanosec = h["sec"], h["nanosec"]
    msg.header.frame_id = h["frame_id"]


def image_msg(f: Dict[str, Any]) -> Any:
    """Return a sensor_msgs/Image with ``f``'s fields (no checks: they are meant to be wrong)."""
    from sensor_msgs.msg import Image

    msg = Image()
    _fill_header(msg, f["header"])
    msg.height, msg.width, msg.encoding = f["height"], f["width"], f["encoding"]
    msg.is_bigendian, msg.step = f["is_bigendian"], f["step"]
    msg.data = array.array("B", f["data"])
    return msg


def compressed_msg(f: Dict[str, Any]) -> Any:
    from sensor_msgs.msg import CompressedImage

    msg = CompressedImage()
    _fill_header(msg, f["header"])
    msg.format = f["format"]
    msg.data = array.array("B", f["data"])
    return msg


def camera_info_msg(f: Dict[str, Any]) -> Any:
    from sensor_msgs.msg import CameraInfo

    msg = CameraInfo()
    _fill_header(msg, f["header"])
    msg.height, msg.width, msg.distortion_model = f["height"], f["width"], f["distortion_model"]
    msg.d, msg.k, msg.r, msg.p = f["d"], f["k"], f["r"], f["p"]
    msg.binning_x, msg.binning_y = f["binning_x"], f["binning_y"]
    msg.roi.x_offset, msg.roi.y_offset, msg.roi.height, msg.roi.width, msg.roi.do_rectify = f["roi"]
    return msg


def good_image_msg(i: int, stamp_ns: int, frame_id: str = "fuzz_good") -> Any:
    """Return a valid rgb8 Image (the frames every one of which must be answered)."""
    frame = good_frame(i)
    return image_msg({"header": {"sec": stamp_ns // 1_000_000_000, "nanosec": stamp_ns % 1_000_000_000,
                                 "frame_id": frame_id},
                      "height": frame.shape[0], "width": frame.shape[1], "encoding": "rgb8", "is_bigendian": 0,
                      "step": frame.shape[1] * 3, "data": frame.tobytes()})


def good_compressed_msg(i: int, stamp_ns: int, frame_id: str = "fuzz_good") -> Any:
    """Return a valid JPEG CompressedImage of :func:`good_frame`."""
    return compressed_msg({"header": {"sec": stamp_ns // 1_000_000_000, "nanosec": stamp_ns % 1_000_000_000,
                                      "frame_id": frame_id},
                           "format": "jpeg", "data": _jpeg(good_frame(i)[..., ::-1].copy())})
