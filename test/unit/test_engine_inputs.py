"""Frame validation and encoded-image checks: every bad input is an InputError saying why."""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
import pytest
import torch

from pspnet_ros.errors import InputError
from pspnet_ros.inference import inputs


def encode(ext, img, params=()):
    ok, buf = cv2.imencode(ext, img, list(params))
    assert ok
    return buf.tobytes()


def png_header(width, height):
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", 13) + b"IHDR" + ihdr
    return inputs.PNG_SIGNATURE + chunk + struct.pack(">I", zlib.crc32(chunk[4:]))


def jpeg_header(width, height):
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, height, width, 3) + b"\x01\x11\x00\x02\x11\x01\x03\x11\x01"
    return b"\xff\xd8" + app0 + sof


IMG = np.random.default_rng(0).integers(0, 256, (30, 50, 3), dtype=np.uint8)


def test_valid_frames_pass_and_report_their_size():
    assert inputs.validate_frame(IMG) == (30, 50)
    assert inputs.validate_frame(torch.from_numpy(IMG)) == (30, 50)
    assert inputs.validate_frame(IMG[:, ::2]) == (30, 25)  # non-contiguous views are fine


@pytest.mark.parametrize("bad, match", [
    (np.zeros((3, 4), np.uint8), r"single-channel \(3, 4\)"),
    (np.zeros((3, 4, 4), np.uint8), "3 channels, got 4.*alpha"),
    (np.zeros((2, 3, 4, 3), np.uint8), "4-D"),
    (np.zeros((3, 4, 3), np.uint16), "dtype must be uint8, got uint16"),
    (torch.zeros(3, 4, 3), "dtype must be uint8, got torch.float32"),
    (np.zeros((3, 0, 3), np.uint8), "empty"),
    (None, "got NoneType"),
    (b"\xff\xd8", "got bytes"),
])
def test_bad_frames_are_named_precisely(bad, match):
    with pytest.raises(InputError, match=match):
        inputs.validate_frame(bad)


def test_raw_frames_above_the_pixel_limit_are_refused():
    with pytest.raises(InputError, match="more than the limit of 100"):
        inputs.validate_frame(np.zeros((10, 11, 3), np.uint8), max_pixels=100)


@pytest.mark.parametrize("ext, params", [(".jpg", ()), (".jpg", (cv2.IMWRITE_JPEG_PROGRESSIVE, 1)), (".png", ())])
def test_encoded_size_reads_headers_without_decoding(ext, params):
    data = encode(ext, IMG, params)
    fmt, h, w = inputs.encoded_size(data)
    assert (fmt, h, w) == (("png" if ext == ".png" else "jpeg"), 30, 50)
    bgr = inputs.decode_cpu(data, fmt, h, w)
    assert bgr.shape == (30, 50, 3)
    if ext == ".png":
        np.testing.assert_array_equal(bgr, IMG)  # lossless; OpenCV reads what it wrote, BGR


def test_format_strings_are_normalized():
    assert inputs.normalize_format("JPG") == "jpeg"
    assert inputs.normalize_format("rgb8; jpeg compressed bgr8") == "jpeg"
    assert inputs.normalize_format("png") == "png"
    assert inputs.normalize_format(None) is None and inputs.normalize_format("auto") is None
    with pytest.raises(InputError, match="unsupported image format 'webp'"):
        inputs.normalize_format("webp")


@pytest.mark.parametrize("data, fmt, match", [
    (b"", "jpeg", "empty"),
    (b"hello world", None, "neither JPEG nor PNG"),
    (encode(".png", IMG), "jpeg", "format says jpeg but the data is png"),
    (png_header(100_000, 100_000), "png", "100000x100000 = 10000000000 pixels.*decompression bomb"),
    (jpeg_header(65_000, 65_000), "jpeg", "65000x65000.*decompression bomb"),
    (png_header(0, 5), "png", "header says 0x5"),
    (inputs.PNG_SIGNATURE + b"\x00\x00", "png", "PNG data truncated"),
    (b"\xff\xd8\xff\xe0\x00\x10JFIF", "jpeg", "no frame header"),
    (b"\xff\xd8\xff\xd9", "jpeg", "end of image before any frame header"),
    (jpeg_header(40, 30)[:-12], "jpeg", "truncated"),
    ("not bytes", "jpeg", "must be bytes"),
])
def test_bad_encoded_data_is_refused_before_decoding(data, fmt, match):
    with pytest.raises(InputError, match=match):
        inputs.encoded_size(data, fmt)


def test_pixel_limit_is_configurable():
    data = encode(".jpg", IMG)
    with pytest.raises(InputError, match="more than the limit of 1000"):
        inputs.encoded_size(data, "jpeg", max_pixels=1000)


@pytest.mark.parametrize("ext", [".jpg", ".png"])
def test_corrupt_bodies_fail_in_the_decoder_with_input_error(ext):
    data = encode(ext, IMG)
    fmt, h, w = inputs.encoded_size(data[: len(data) // 2])  # the header survives truncation
    with pytest.raises(InputError, match=f"corrupt {fmt.upper()} data"):
        inputs.decode_cpu(data[: len(data) // 2], fmt, h, w)


def test_jpeg_completeness_check_for_the_gpu_decoder():
    data = encode(".jpg", IMG)
    assert inputs.jpeg_complete(data) and inputs.jpeg_complete(data + b"\x00" * 100)
    assert not inputs.jpeg_complete(data[:-10])
