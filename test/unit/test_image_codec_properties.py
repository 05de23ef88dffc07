"""Property test: any Image fields either convert to (H, W, 3) uint8 or raise InputError."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pspnet_ros.errors import InputError
from pspnet_ros.image_codec import SUPPORTED_ENCODINGS, decode_image

ENCODINGS = st.one_of(
    st.sampled_from(SUPPORTED_ENCODINGS + ("mono16", "32FC1", "16UC1", "8UC3", "RGB8", "", "jpeg",
                                           "bayer_rggb16", "yuv422 ", "rgb")),
    st.text(max_size=12),
)


@st.composite
def image_fields(draw):
    height = draw(st.integers(-2, 24))
    width = draw(st.integers(-2, 24))
    encoding = draw(ENCODINGS)
    step = draw(st.integers(-4, 120))
    # Mostly the exactly-sized data that reaches the conversion code, sometimes off by a bit,
    # sometimes arbitrary.
    size = max(step, 0) * max(height, 0)
    length = draw(st.one_of(st.just(size), st.integers(max(size - 3, 0), size + 3), st.integers(0, 400)))
    data = draw(st.binary(min_size=length, max_size=length))
    kind = draw(st.sampled_from(["bytes", "bytearray", "numpy"]))
    if kind == "bytearray":
        data = bytearray(data)
    elif kind == "numpy":
        data = np.frombuffer(data, np.uint8)
    return {"height": height, "width": width, "encoding": encoding, "step": step,
                "is_bigendian": draw(st.integers(0, 1)), "data": data}


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(image_fields())
def test_any_fields_convert_or_raise_input_error(f):
    try:
        out = decode_image(**f)
    except InputError as exc:
        assert str(exc)  # a message, never empty
        return
    assert out.array.shape == (f["height"], f["width"], 3)
    assert out.array.dtype == np.uint8
    # The frame is fully readable (views never point outside the buffer).
    assert int(out.array.astype(np.int64).sum()) >= 0


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 200_000), st.integers(1, 200_000), st.sampled_from(SUPPORTED_ENCODINGS),
       st.binary(max_size=64))
def test_absurd_claimed_sizes_never_allocate_or_crash(height, width, encoding, data):
    try:
        out = decode_image(height, width, encoding, width * 4, 0, data)
    except InputError:
        return
    assert out.array.shape == (height, width, 3)
