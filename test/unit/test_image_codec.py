"""Image message fields <-> numpy: zero-copy paths, conversions, and specific errors."""

from __future__ import annotations

import array

import cv2
import numpy as np
import pytest

from pspnet_ros.errors import InputError
from pspnet_ros.image_codec import SUPPORTED_ENCODINGS, decode_image, encode_image, image_to_rgb


def fields(img: np.ndarray, encoding: str, pad: int = 0, is_bigendian: int = 0):
    """Message-like fields for an (H, W[, C]) uint8 array, rows padded with `pad` junk bytes."""
    h, w = img.shape[:2]
    rows = img.reshape(h, -1)
    if pad:
        rows = np.concatenate([rows, np.full((h, pad), 0xAB, np.uint8)], axis=1)
    data = array.array("B")
    data.frombytes(np.ascontiguousarray(rows).tobytes())
    return {"height": h, "width": w, "encoding": encoding, "step": rows.shape[1], "is_bigendian": is_bigendian,
                "data": data}


@pytest.fixture(scope="module")
def frame(kitti_frames):
    """Return a real KITTI frame, cropped to an odd-free size so every encoding applies."""
    return kitti_frames[0][1][:120, :320].copy()


@pytest.mark.parametrize("pad", [0, 7])
def test_rgb8_is_a_zero_copy_view_honouring_step(frame, pad):
    f = fields(frame, "rgb8", pad=pad)
    out = decode_image(**f)
    assert out.zero_copy and not out.bgr
    assert out.array.shape == frame.shape and out.array.dtype == np.uint8
    assert np.shares_memory(out.array, np.frombuffer(f["data"], np.uint8))
    np.testing.assert_array_equal(out.array, frame)


def test_bgr8_is_flagged_not_copied(frame):
    bgr = frame[..., ::-1].copy()
    out = decode_image(**fields(bgr, "bgr8"))
    assert out.bgr and out.zero_copy
    np.testing.assert_array_equal(out.array, bgr)
    np.testing.assert_array_equal(image_to_rgb(**fields(bgr, "bgr8")), frame)


@pytest.mark.parametrize("encoding,order", [("rgba8", [0, 1, 2]), ("bgra8", [2, 1, 0])])
def test_four_channel_encodings_drop_alpha_without_copy(frame, encoding, order):
    alpha = np.full(frame.shape[:2] + (1,), 255, np.uint8)
    img4 = np.concatenate([frame[..., order], alpha], axis=2)
    f = fields(img4, encoding, pad=4)
    out = decode_image(**f)
    assert out.zero_copy and out.bgr == (encoding == "bgra8")
    assert np.shares_memory(out.array, np.frombuffer(f["data"], np.uint8))
    np.testing.assert_array_equal(image_to_rgb(**f), frame)


def test_mono8_is_replicated_to_three_channels(frame):
    gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    out = image_to_rgb(**fields(gray, "mono8", pad=3))
    assert out.shape == frame.shape
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], gray)


def mosaic(rgb: np.ndarray, pattern: str) -> np.ndarray:
    """Sample an RGB image through a Bayer filter whose first row starts with pattern[:2]."""
    idx = {"r": 0, "g": 1, "b": 2}
    out = np.empty(rgb.shape[:2], np.uint8)
    for dy in (0, 1):
        for dx in (0, 1):
            out[dy::2, dx::2] = rgb[dy::2, dx::2, idx[pattern[2 * dy + dx]]]
    return out


@pytest.mark.parametrize("pattern", ["rggb", "bggr", "gbrg", "grbg"])
def test_bayer_patterns_demosaic_to_the_right_colours(frame, pattern):
    raw = mosaic(frame, pattern)
    out = image_to_rgb(**fields(raw, f"bayer_{pattern}8", pad=2))
    assert out.shape == frame.shape
    err = np.abs(out[4:-4, 4:-4].astype(int) - frame[4:-4, 4:-4]).mean()
    swapped = np.abs(out[4:-4, 4:-4, ::-1].astype(int) - frame[4:-4, 4:-4]).mean()
    # Demosaicing blurs edges a little; swapping red and blue (a wrong pattern table) does not
    # blur but changes every pixel's hue: the right table must be clearly closer.
    assert err < 8 and err < swapped / 2


def to_yuv422(rgb: np.ndarray, order: str) -> np.ndarray:
    # BT.601 video range, the convention of YUV 4:2:2 camera streams (and OpenCV's decoder).
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    y = np.clip(16 + 0.257 * r + 0.504 * g + 0.098 * b, 0, 255)
    u_full = 128 - 0.148 * r - 0.291 * g + 0.439 * b
    v_full = 128 + 0.439 * r - 0.368 * g - 0.071 * b
    u = np.clip((u_full[:, 0::2] + u_full[:, 1::2]) / 2, 0, 255)
    v = np.clip((v_full[:, 0::2] + v_full[:, 1::2]) / 2, 0, 255)
    packed = np.empty(rgb.shape[:2] + (2,), np.uint8)
    chroma_first = order == "uyvy"
    packed[:, :, 1 if chroma_first else 0] = y
    packed[:, 0::2, 0 if chroma_first else 1] = u
    packed[:, 1::2, 0 if chroma_first else 1] = v
    return packed


@pytest.mark.parametrize("encoding,order", [("yuv422", "uyvy"), ("yuv422_yuy2", "yuyv")])
def test_yuv422_variants_convert(frame, encoding, order):
    out = image_to_rgb(**fields(to_yuv422(frame, order), encoding, pad=6))
    other = "yuv422_yuy2" if encoding == "yuv422" else "yuv422"
    wrong = image_to_rgb(**fields(to_yuv422(frame, order), other, pad=6))
    assert out.shape == frame.shape
    err = np.abs(out.astype(int) - frame).mean()
    assert err < 6 and err < np.abs(wrong.astype(int) - frame).mean() / 3


def test_is_bigendian_is_irrelevant_for_byte_encodings(frame):
    np.testing.assert_array_equal(decode_image(**fields(frame, "rgb8", is_bigendian=1)).array, frame)


def test_accepts_bytes_and_numpy_buffers(frame):
    f = fields(frame, "rgb8")
    for data in (bytes(f["data"]), np.frombuffer(f["data"], np.uint8), memoryview(f["data"])):
        np.testing.assert_array_equal(decode_image(**{**f, "data": data}).array, frame)


BAD = [
    # (fields override, message fragment)
    ({"height": 0}, "empty image"),
    ({"width": 0}, "empty image"),
    ({"height": -3}, "empty image"),
    ({"encoding": ""}, "missing encoding"),
    ({"encoding": "hsv8"}, "unsupported encoding 'hsv8'"),
    ({"encoding": "RGB8"}, "case-sensitive"),
    ({"encoding": "mono16"}, "16-bit mono"),
    ({"encoding": "32FC1"}, "32-bit float"),
    ({"encoding": "16UC1"}, "16-bit unsigned"),
    ({"encoding": "8UC3"}, "no channel order"),
    ({"step": 5}, "step 5 is smaller than width*bytes_per_pixel = 4*3 = 12"),
    ({"data": b"\0" * 35}, "data has 35 bytes but step*height = 12*3 = 36"),
    ({"data": b"\0" * 37}, "data has 37 bytes"),
    ({"height": 100000, "width": 100000, "step": 300000, "data": b"\0" * 16}, "image too large"),
    ({"height": 100, "width": 100, "step": 300, "data": b"\0" * 16}, "data has 16 bytes but step*height = 300*100"),
    ({"encoding": "yuv422", "width": 3, "step": 6, "data": b"\0" * 18}, "even width"),
    ({"data": [1, 2, 3]}, "bytes-like"),
    ({"height": "3"}, "height must be an integer"),
    ({"encoding": None}, "encoding must be a string"),
]


@pytest.mark.parametrize("override,fragment", BAD, ids=[b[1][:30] for b in BAD])
def test_bad_fields_raise_input_error_naming_the_problem(override, fragment):
    base = {"height": 3, "width": 4, "encoding": "rgb8", "step": 12, "is_bigendian": 0, "data": b"\0" * 36}
    with pytest.raises(InputError, match=None) as info:
        decode_image(**{**base, **override})
    assert fragment in str(info.value)


def test_supported_encodings_all_decode_a_tiny_frame():
    for enc in SUPPORTED_ENCODINGS:
        bpp = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4}.get(enc, 2 if enc.startswith("yuv") else 1)
        out = decode_image(2, 2, enc, 2 * bpp, 0, bytes(4 * bpp))
        assert out.array.shape == (2, 2, 3) and out.array.dtype == np.uint8


@pytest.mark.parametrize("shape,encoding,expected", [
    ((5, 7), None, "mono8"), ((5, 7, 3), None, "rgb8"), ((5, 7, 3), "bgr8", "bgr8"),
    ((5, 7, 4), None, "rgba8")])
def test_encode_round_trips(shape, encoding, expected):
    img = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    f = encode_image(img, encoding)
    assert f.encoding == expected and (f.height, f.width) == shape[:2] and f.is_bigendian == 0
    assert isinstance(f.data, array.array) and f.data.typecode == "B"
    assert f.step * f.height == len(f.data)
    back = np.frombuffer(f.data, np.uint8).reshape(shape)
    np.testing.assert_array_equal(back, img)


def test_encode_non_contiguous_view():
    img = np.random.default_rng(1).integers(0, 256, (6, 8, 3), dtype=np.uint8)[:, ::2]
    f = encode_image(img)
    np.testing.assert_array_equal(np.frombuffer(f.data, np.uint8).reshape(6, 4, 3), img)


@pytest.mark.parametrize("img,encoding", [
    (np.zeros((4, 4), np.float32), None), (np.zeros((4, 4, 2), np.uint8), None),
    (np.zeros((4, 4, 3), np.uint8), "mono8"), (np.zeros((0, 4, 3), np.uint8), None)])
def test_encode_refuses_what_cannot_be_published(img, encoding):
    with pytest.raises(InputError):
        encode_image(img, encoding)
