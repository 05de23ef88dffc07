"""Decoding of encoded frames on the engine's worker: nvJPEG on its own stream, else OpenCV.

ROS-free. The bytes were checked (format, size, decompression-bomb limit) before decoding.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional

from .inputs import decode_cpu, decode_jpeg_device, encoded_size, jpeg_complete
from .pipeline import Item
from .timing import Device


def decode_item(it: Item, dev: Device, *, max_pixels: int, gpu_decode: bool,
                decode_s: Optional[Any], on_gpu_failure: Callable[[Exception], None]) -> None:
    """Fill ``it.frame`` (and ``shape``, ``bgr``, ``on_device``, ``frame_ready``, ``decode_ms``) from ``it.data``.

    Frees the bytes. Raises InputError for bad data.

    With ``gpu_decode`` a complete JPEG is decoded by nvJPEG on ``decode_s``, its own stream:
    torchvision's decoder allocates on the current stream and writes from a private one, so on
    the compute stream it would queue behind (and be waited for by) the batch running there.
    The frame's ``frame_ready`` event, recorded on ``decode_s``, is what the compute stream
    waits for. Any GPU failure falls back to the CPU decoder (``on_gpu_failure`` is told).
    """
    t0 = time.perf_counter()
    fmt, h, w = encoded_size(it.data, it.fmt, max_pixels)
    it.shape = (h, w)
    if gpu_decode and fmt == "jpeg" and jpeg_complete(it.data):
        try:
            with dev.use(decode_s):
                frame = decode_jpeg_device(it.data, dev.device)
                ready = dev.event(timing=False)
                ready.record(decode_s)
            if tuple(frame.shape[:2]) != (h, w):
                raise RuntimeError(f"nvJPEG gave {tuple(frame.shape[:2])}, header says {(h, w)}")
            it.frame, it.bgr, it.on_device, it.frame_ready = frame, False, True, ready
        except Exception as exc:  # noqa: BLE001 - fall back to the CPU decoder
            on_gpu_failure(exc)
    if it.frame is None:
        it.frame, it.bgr = decode_cpu(it.data, fmt, h, w), True  # OpenCV decodes to BGR
    it.data = None  # free the bytes early
    it.decode_ms = (time.perf_counter() - t0) * 1000.0

