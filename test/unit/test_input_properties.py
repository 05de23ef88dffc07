"""More property tests for everything a camera message can throw at the conversion code.

test_image_codec_properties.py covers integer fields with random data. Here:
- fields of any Python type (huge, negative, float, None, numpy integers, odd buffers) still
  give either a right-shaped frame or :class:`InputError`, never another exception;
- a frame that converts has the right *pixels* (rows, padding, channel order), not just the
  right shape;
- compressed frames (JPEG/PNG damaged in any way: truncated, bytes flipped, garbage inserted)
  are either decoded to the size their header announces or refused with InputError.
"""

from __future__ import annotations

import array

import cv2
import numpy as np
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pspnet_ros.errors import InputError
from pspnet_ros.image_codec import SUPPORTED_ENCODINGS, decode_image, encode_image, image_to_rgb
from pspnet_ros.inference.inputs import decode_cpu, encoded_size, normalize_format

SETTINGS = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}

# ----------------------------------------------------------------------------- any types

INTS = st.one_of(st.integers(-3, 40), st.sampled_from([2**31 - 1, 2**31, 2**32 + 5, 2**63, -(2**63), 10**12]))
ODD = st.one_of(st.none(), st.booleans(), st.floats(allow_nan=True), st.text(max_size=4),
                st.just(b"12"), st.just([1, 2]))
FIELD = st.one_of(INTS, INTS.filter(lambda v: -(2**63) <= v < 2**63).map(np.int64),
                  INTS.filter(lambda v: 0 <= v < 2**32).map(np.uint32), ODD)
ENCODING = st.one_of(st.sampled_from(SUPPORTED_ENCODINGS + ("mono16", "32FC1", "bayer_rggb16", "8UC3")),
                     st.text(max_size=10), st.none(), st.just(b"rgb8"), st.integers())


@st.composite
def any_data(draw, size: int):
    raw = draw(st.binary(min_size=size, max_size=size))
    kind = draw(st.sampled_from(["bytes", "bytearray", "memoryview", "array_B", "numpy"]) if draw(st.booleans())
                else st.sampled_from(["array_H", "numpy_strided", "numpy_float", "str", "list", "none"]))
    if kind == "bytearray":
        return bytearray(raw)
    if kind == "memoryview":
        return memoryview(raw)
    if kind == "array_B":
        return array.array("B", raw)
    if kind == "array_H":  # 2-byte items: a buffer, but not of bytes
        return array.array("H", raw[: len(raw) // 2 * 2])
    if kind == "numpy":
        return np.frombuffer(raw, np.uint8)
    if kind == "numpy_strided":  # not contiguous: cannot be viewed as bytes
        return np.frombuffer(raw * 2, np.uint8)[::2]
    if kind == "numpy_float":
        return np.frombuffer(raw[: len(raw) // 4 * 4], np.float32)
    if kind == "str":
        return raw.decode("latin-1")
    if kind == "list":
        return list(raw)
    return None if kind == "none" else raw


@st.composite
def any_fields(draw):
    """Mostly plausible fields (so conversions run), each one sometimes of any type or value."""
    def field(plausible):
        return draw(FIELD) if draw(st.integers(0, 4)) == 0 else draw(plausible)

    height, width = field(st.integers(1, 12)), field(st.integers(1, 12))
    encoding = draw(ENCODING) if draw(st.integers(0, 4)) == 0 else draw(st.sampled_from(SUPPORTED_ENCODINGS))
    bpp = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "yuv422": 2, "yuv422_yuy2": 2}.get(encoding, 1)
    plain = isinstance(width, (int, np.integer)) and not isinstance(width, bool) and 0 <= width <= 64
    step = field(st.integers(0, 6).map(lambda pad: int(width) * bpp + pad) if plain else st.integers(0, 99))
    try:
        size = int(step) * int(height)
    except (TypeError, ValueError, OverflowError):
        size = 0
    if not 0 <= size <= 4096:
        size = draw(st.integers(0, 64))
    size = draw(st.one_of(st.just(size), st.just(size), st.integers(0, 64)))
    return {"height": height, "width": width, "encoding": encoding, "step": step,
                "is_bigendian": draw(st.one_of(st.integers(0, 1), ODD)), "data": draw(any_data(size))}


@settings(max_examples=500, **SETTINGS)
@given(any_fields())
def test_fields_of_any_type_convert_or_raise_input_error(f):
    try:
        out = decode_image(**f)
    except InputError as exc:
        assert str(exc)
        return
    assert out.array.shape == (int(f["height"]), int(f["width"]), 3) and out.array.dtype == np.uint8
    assert int(out.array.astype(np.int64).sum()) >= 0  # every pixel readable


# ----------------------------------------------------------------------------- pixel values

BPP = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}


@settings(max_examples=200, **SETTINGS)
@given(st.sampled_from(sorted(BPP)), st.integers(1, 12), st.integers(1, 12), st.integers(0, 9), st.data())
def test_converted_pixels_are_the_message_pixels(encoding, height, width, pad, data):
    bpp = BPP[encoding]
    step = width * bpp + pad
    raw = np.frombuffer(data.draw(st.binary(min_size=step * height, max_size=step * height)), np.uint8)
    rgb = image_to_rgb(height, width, encoding, step, data.draw(st.integers(0, 1)), raw)
    px = raw.reshape(height, step)[:, : width * bpp].reshape(height, width, bpp)
    expected = {"rgb8": px, "bgr8": px[..., ::-1], "rgba8": px[..., :3], "bgra8": px[..., 2::-1],
                "mono8": np.repeat(px, 3, axis=2)}[encoding]
    np.testing.assert_array_equal(rgb, expected)


@settings(max_examples=100, **SETTINGS)
@given(st.integers(1, 16), st.integers(1, 16), st.sampled_from(["mono8", "rgb8", "bgr8", "rgba8", "bgra8"]),
       st.data())
def test_encode_then_decode_gives_the_array_back(height, width, encoding, data):
    shape = (height, width) if encoding == "mono8" else (height, width, BPP[encoding])
    arr = np.frombuffer(data.draw(st.binary(min_size=int(np.prod(shape)), max_size=int(np.prod(shape)))),
                        np.uint8).reshape(shape)
    f = encode_image(arr, encoding)
    out = decode_image(f.height, f.width, f.encoding, f.step, f.is_bigendian, f.data)
    got = out.array[..., 0] if encoding == "mono8" else out.array
    want = arr if encoding == "mono8" else arr[..., :3]
    np.testing.assert_array_equal(got, want)
    assert out.bgr == encoding.startswith("bgr")


# ----------------------------------------------------------------------------- compressed frames

def _encoded() -> dict:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (24, 40, 3), np.uint8)
    img[8:16] = 128  # some structure, so the entropy-coded data is not all noise
    return {fmt: cv2.imencode(ext, img)[1].tobytes() for fmt, ext in (("jpeg", ".jpg"), ("png", ".png"))}


ENCODED = _encoded()


@st.composite
def damaged(draw):
    fmt = draw(st.sampled_from(sorted(ENCODED)))
    data = bytearray(ENCODED[fmt])
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["truncate", "flip", "insert", "delete", "zero_run"]))
        if not data:
            break
        pos = draw(st.integers(0, len(data) - 1))
        if op == "truncate":
            del data[pos:]
        elif op == "flip":
            data[pos] ^= draw(st.integers(1, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 64))]
        else:
            n = draw(st.integers(1, 64))
            data[pos:pos + n] = bytes(len(data[pos:pos + n]))
    declared = draw(st.sampled_from([fmt, None, "auto", "png" if fmt == "jpeg" else "jpeg",
                                     "rgb8; jpeg compressed bgr8", "tiff", ""]))
    return bytes(data), declared


def _decode(data: bytes, declared):
    fmt, h, w = encoded_size(data, normalize_format(declared) if declared not in (None, "auto", "") else None)
    img = decode_cpu(data, fmt, h, w)
    return img, (h, w)


@settings(max_examples=300, **SETTINGS)
@given(damaged())
def test_damaged_jpeg_and_png_decode_to_their_size_or_raise_input_error(case):
    data, declared = case
    try:
        img, (h, w) = _decode(data, declared)
    except InputError as exc:
        assert str(exc)
        return
    assert img.shape == (h, w, 3) and img.dtype == np.uint8


@settings(max_examples=200, **SETTINGS)
@given(st.binary(max_size=300), st.one_of(st.none(), st.text(max_size=12)))
def test_arbitrary_bytes_are_refused_with_input_error(data, declared):
    assume(not data.startswith((b"\x89PNG", b"\xff\xd8")) or len(data) < 40)
    try:
        _decode(data, declared)
    except InputError:
        return
    raise AssertionError(f"{data[:16]!r}... decoded")
