"""Aspect-true inference size: the camera's aspect ratio under a pixel budget.

The shipped models were trained on crops of frames scaled to a fixed pixel area (for KITTI
188x621, half of 375x1242). Squeezing a 4:3 or 16:9 frame into KITTI's 3.3:1 shape distorts
everything the network learned about shapes (a 4:3 camera is squeezed 2.5x horizontally), so
``inference_size: auto`` keeps each frame's own aspect ratio and spends about the same number
of pixels as training did.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

Size = Tuple[int, int]
# The network runs at any size, but sides that are a multiple of its output stride keep the
# pyramid's bins and the skip decoder on whole feature cells, and a coarse grid keeps the
# number of distinct sizes (each one an ONNX Runtime / OpenVINO shape) small.
ALIGN = 16
# Frames whose aspect is within this of the model's own input size use that size unchanged
# (so a KITTI camera keeps the exact 188x621 the model was trained and quantized at).
SAME_ASPECT_TOL = 0.01


def parse_inference_size(value) -> Optional[Size]:
    """``"auto"``/``None``/``""`` -> None; ``"HxW"``, ``[H, W]`` -> (H, W); errors are specific."""
    if value is None:
        return None
    if isinstance(value, str):
        v = value.strip().lower()
        if v in ("", "auto"):
            return None
        parts = v.replace(",", "x").split("x")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise ValueError(f"inference_size {value!r}: expected 'auto' or 'HxW', e.g. 188x621")
        h, w = (int(p) for p in parts)
    else:
        seq = list(value)
        if len(seq) == 0:
            return None
        if len(seq) != 2:
            raise ValueError(f"inference_size {value!r}: expected [H, W] or 'auto'")
        h, w = (int(v) for v in seq)
    if h < 1 or w < 1 or h > 8192 or w > 8192:
        raise ValueError(f"inference_size {h}x{w}: each side must be within 1..8192")
    return h, w


def auto_inference_size(frame_hw: Sequence[int], model_size: Optional[Sequence[int]] = None, *,
                        pixel_budget: Optional[int] = None, align: int = ALIGN) -> Size:
    """Return the inference (h, w) for a frame: its aspect ratio at ``pixel_budget`` pixels.

    ``pixel_budget`` defaults to the area of ``model_size`` (the model's training/input size).
    A frame with the model's own aspect ratio (within 1 %) gets ``model_size`` exactly;
    any other frame gets sides rounded to a multiple of ``align`` (at least ``align`` each). A
    frame with fewer pixels than the budget runs at its own size (a small camera is not blown up).
    """
    fh, fw = int(frame_hw[0]), int(frame_hw[1])
    if fh <= 0 or fw <= 0:
        raise ValueError(f"frame size {fh}x{fw} must be positive")
    if pixel_budget is None:
        if model_size is None:
            raise ValueError("auto inference size needs the model's input size or a pixel budget")
        pixel_budget = int(model_size[0]) * int(model_size[1])
    if pixel_budget <= 0:
        raise ValueError(f"pixel budget {pixel_budget} must be positive")
    if model_size is not None:
        mh, mw = int(model_size[0]), int(model_size[1])
        if abs((fw / fh) / (mw / mh) - 1.0) <= SAME_ASPECT_TOL and mh * mw == pixel_budget:
            return mh, mw
    scale = math.sqrt(pixel_budget / float(fh * fw))
    if scale >= 1.0:  # a camera smaller than the budget runs at its own size, never blown up
        return fh, fw
    h = max(align, int(round(fh * scale / align)) * align)
    w = max(align, int(round(fw * scale / align)) * align)
    return h, w
