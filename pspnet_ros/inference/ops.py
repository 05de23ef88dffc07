"""Pre- and post-processing as tensor ops that run unchanged on CUDA and CPU tensors.

Every output has one exact definition, implemented twice:

* ``impl="torch"``: device-agnostic torch ops - what runs on the GPU, and what the tests run on
  CPU tensors to check the GPU code path;
* ``impl="numpy"``: numpy/OpenCV for CPU tensors, several times faster there (torch's CPU
  kernels for full-frame float resizes, uint8 gathers and integer blending are slow). Colour,
  overlay, mask and nearest resizes are bit-identical to the torch ops; the two bilinear resizes
  use OpenCV's INTER_LINEAR (same half-pixel convention): the downscaled frame is rounded to
  uint8 before normalization (within one grey level of the float resize), and the logits are
  upsampled in float32 (for two classes, their difference: one channel instead of two). Labels
  therefore differ from the torch path only where two classes' scores are within float rounding
  (checked by the tests on real frames).

Definitions (B frames, K classes, output size H x W):

* labels: argmax over classes, ties to the lowest index; ``upsample="logits"`` resizes the
  logits bilinearly (align_corners=False) first, ``"labels"`` resizes the labels with
  pixel-centre nearest neighbour: source index ``((2 i + 1) n_in) // (2 n_out)``.
* confidence: ``round(255 * max softmax)`` as uint8.
* color: ``palette[label]``; labels outside the palette are black.
* overlay: ``(rgb * (256 - w) + color * w + 128) >> 8`` with ``w = round(alpha * 256)``: integer
  maths, so CPU and GPU give the same bytes.
* drivable: 255 where the label is a drivable class, else 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Dict, FrozenSet, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

Size = Tuple[int, int]
#: argmax by a running comparison up to this many classes (fast on CPU, exact ties).
_LOOP_ARGMAX_MAX_K = 32


@dataclass(frozen=True)
class PostSpec:
    """What to compute for one batch.

    outputs: subset of labels/color/overlay/drivable/confidence/probs; out_size: (H, W); alpha_w:
    overlay weight in 0..256.
    """

    outputs: FrozenSet[str]
    out_size: Size
    upsample: str = "logits"
    alpha_w: int = 128


def alpha_weight(alpha: float) -> int:
    """Overlay weight in 1/256 steps (0..256)."""
    return int(round(float(alpha) * 256))


class Luts:
    """Palette and drivable lookup tables (256 entries, so any uint8 label indexes safely)."""

    def __init__(self, palette: np.ndarray, drivable_ids: Sequence[int], device: torch.device):
        color = np.zeros((256, 3), np.uint8)
        color[: len(palette)] = np.asarray(palette, np.uint8)
        drivable = np.zeros(256, np.uint8)
        drivable[list(drivable_ids)] = 255
        self.color_np, self.drivable_np = color, drivable
        # RGB packed little-endian into one uint32 per class: a 1-D gather plus OpenCV's
        # RGBA->RGB is ~2x faster on CPU than gathering (256, 3) rows.
        self.color_packed = (color[:, 0].astype("<u4") | color[:, 1].astype("<u4") << 8
                             | color[:, 2].astype("<u4") << 16)
        self.color = torch.from_numpy(color).to(device)
        self.drivable = torch.from_numpy(drivable).to(device)
        self.drivable_ids = tuple(int(i) for i in drivable_ids)


# ----------------------------------------------------------------------------- preprocessing

def preprocess(frames: torch.Tensor, size: Size, mean255: torch.Tensor, inv_std255: torch.Tensor,
               channels_last: bool = False, keep_resized: bool = False
               ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """(B, H, W, 3) uint8 RGB -> (B, 3, h, w) float32 normalized network input.

    ``mean255``/``inv_std255``: (1, 3, 1, 1) float tensors (mean * 255, 1 / (std * 255)).
    Bilinear resize (align_corners=False, no antialias - the OpenCV INTER_LINEAR convention) on
    the float frame, so nothing is rounded before normalization. With ``keep_resized`` also
    returns the resized frame as (B, h, w, 3) uint8 (the overlay base at network resolution).
    """
    # permute is a view: the data stays HWC, i.e. a channels_last NCHW tensor, which the
    # float conversion and the bilinear kernel keep (no transposing copy).
    x = frames.permute(0, 3, 1, 2).float()
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
    resized = None
    if keep_resized:
        resized = x.round().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    x = x.sub_(mean255).mul_(inv_std255)  # x is a fresh float tensor: in place is safe
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return x.contiguous(memory_format=fmt), resized


def preprocess_np(frames: np.ndarray, size: Size, mean255: np.ndarray, inv_std255: np.ndarray,
                  keep_resized: bool = False) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """:func:`preprocess` with OpenCV on the CPU: (B, H, W, 3) uint8 RGB -> (B, 3, h, w) float32.

    The uint8 frame is resized (INTER_LINEAR, no antialias) and then normalized channel by
    channel straight into the planar network input: one small float image, no full-frame float
    copy. ``mean255``/``inv_std255``: three floats each.
    """
    import cv2

    b, (h, w) = frames.shape[0], tuple(size)
    x = np.empty((b, 3, h, w), np.float32)
    small_all = np.empty((b, h, w, 3), np.uint8) if keep_resized else None
    for i in range(b):
        f = frames[i]
        small = f if f.shape[:2] == (h, w) else cv2.resize(f, (w, h), interpolation=cv2.INTER_LINEAR)
        for c in range(3):
            np.subtract(small[..., c], np.float32(mean255[c]), out=x[i, c], dtype=np.float32)
            x[i, c] *= np.float32(inv_std255[c])
        if small_all is not None:
            small_all[i] = small
    return torch.from_numpy(x), (torch.from_numpy(small_all) if small_all is not None else None)


def upsample_labels_np(logits: np.ndarray, size: Size) -> np.ndarray:
    """(B, K, h, w) float logits -> (B, H, W) uint8 labels of the bilinearly upsampled logits.

    OpenCV INTER_LINEAR per channel in float32 and a running strict '>' (ties to the lowest
    class, like argmax). Two classes: the sign of the upsampled difference (bilinear resizing is
    linear, so that is the same decision, one resize instead of two).
    """
    import cv2

    b, k = logits.shape[:2]
    hh, ww = tuple(size)
    out = np.zeros((b, hh, ww), np.uint8)
    up = lambda a: cv2.resize(np.ascontiguousarray(a, np.float32), (ww, hh),  # noqa: E731
                              interpolation=cv2.INTER_LINEAR)
    for i in range(b):
        if k == 2:
            np.greater(up(logits[i, 1] - logits[i, 0]), 0.0, out=out[i].view(np.bool_))
            continue
        best = up(logits[i, 0])
        for c in range(1, k):
            lc = up(logits[i, c])
            out[i][lc > best] = c
            np.maximum(best, lc, out=best)
    return out


# ----------------------------------------------------------------------------- torch post ops

def argmax_labels(logits: torch.Tensor) -> torch.Tensor:
    """(B, K, h, w) -> (B, h, w) uint8, ties to the lowest class index."""
    k = logits.shape[1]
    if logits.device.type == "cuda" or k > _LOOP_ARGMAX_MAX_K:
        return logits.argmax(1).to(torch.uint8)
    if k == 2:  # the common road/not-road case: one comparison (a tie gives 0, like argmax)
        return (logits[:, 1] > logits[:, 0]).to(torch.uint8)
    # On CPU, torch's argmax over a short, strided class dim is ~100x slower than K
    # elementwise passes; strict '>' keeps the first maximum like torch/numpy argmax.
    best = logits[:, 0]
    labels = torch.zeros(best.shape, dtype=torch.uint8, device=logits.device)
    for c in range(1, k):
        lc = logits[:, c]
        labels.masked_fill_(lc > best, c)
        best = torch.maximum(best, lc)
    return labels


def confidence_u8(logits: torch.Tensor) -> torch.Tensor:
    """(B, K, h, w) logits -> (B, h, w) uint8 round(255 * max softmax)."""
    return logits.float().softmax(1).amax(1).mul_(255).round_().to(torch.uint8)


@lru_cache(maxsize=64)
def nearest_index(n_in: int, n_out: int) -> np.ndarray:
    """Pixel-centre nearest source index for each of ``n_out`` outputs (exact integer maths)."""
    return ((2 * np.arange(n_out, dtype=np.int64) + 1) * n_in) // (2 * n_out)


_index_cache: Dict[Tuple[int, int, str], torch.Tensor] = {}


def _nearest_index_t(n_in: int, n_out: int, device: torch.device) -> torch.Tensor:
    key = (n_in, n_out, str(device))
    idx = _index_cache.get(key)
    if idx is None:
        idx = torch.from_numpy(nearest_index(n_in, n_out)).to(device)
        if len(_index_cache) > 64:
            _index_cache.clear()
        _index_cache[key] = idx
    return idx


def resize_nearest(x: torch.Tensor, size: Size) -> torch.Tensor:
    """(B, h, w) -> (B, H, W), pixel-centre nearest neighbour (any dtype)."""
    h, w = x.shape[-2:]
    if (h, w) == tuple(size):
        return x
    rows = _nearest_index_t(h, size[0], x.device)
    cols = _nearest_index_t(w, size[1], x.device)
    return x.index_select(-2, rows).index_select(-1, cols)


def colorize(labels: torch.Tensor, lut: torch.Tensor) -> torch.Tensor:
    """(B, H, W) uint8 -> (B, H, W, 3) uint8 via a (256, 3) lookup table."""
    return lut[labels.long()]


def blend(rgb: torch.Tensor, color: torch.Tensor, alpha_w: int) -> torch.Tensor:
    """Integer alpha blend of two uint8 images of equal shape (see module docstring)."""
    if alpha_w <= 0:
        return rgb.clone()
    if alpha_w >= 256:
        return color.clone()
    out = rgb.to(torch.int32).mul_(256 - alpha_w).add_(color.to(torch.int32), alpha=alpha_w)
    return out.add_(128).bitwise_right_shift_(8).to(torch.uint8)


def drivable_mask(labels: torch.Tensor, lut: torch.Tensor) -> torch.Tensor:
    """(B, H, W) uint8 -> (B, H, W) uint8 0/255 via a (256,) lookup table."""
    return lut[labels.long()]


# ----------------------------------------------------------------------------- numpy post ops

def colorize_np(labels: np.ndarray, lut: np.ndarray, packed: Optional[np.ndarray] = None) -> np.ndarray:
    """(H, W) uint8 -> (H, W, 3) uint8; ``packed`` is ``Luts.color_packed`` (faster)."""
    if packed is None or labels.ndim != 2:
        return np.take(lut, labels, axis=0)
    import cv2

    rgba = np.take(packed, labels).view(np.uint8).reshape(labels.shape + (4,))
    return cv2.cvtColor(rgba, cv2.COLOR_RGBA2RGB)


def blend_np(rgb: np.ndarray, color: np.ndarray, alpha_w: int) -> np.ndarray:
    import cv2

    if alpha_w <= 0:
        return np.array(rgb, copy=True)
    if alpha_w >= 256:
        return np.array(color, copy=True)
    # The weights are multiples of 1/256 and the offset 1/512, so every intermediate is exact
    # in float32 and OpenCV's round-to-nearest equals the integer formula's floor(x + 1/2)
    # (checked for all byte pairs and weights in the tests).
    return cv2.addWeighted(np.ascontiguousarray(rgb), (256 - alpha_w) / 256.0,
                           np.ascontiguousarray(color), alpha_w / 256.0, 1.0 / 512.0)


def drivable_np(labels: np.ndarray, lut: np.ndarray) -> np.ndarray:
    import cv2

    if labels.ndim == 2 and labels.dtype == np.uint8 and labels.size:
        return cv2.LUT(labels, lut)  # same table, ~2x faster than np.take
    return np.take(lut, labels)


def resize_nearest_np(x: np.ndarray, size: Size) -> np.ndarray:
    """(h, w) -> (H, W) like :func:`resize_nearest`."""
    h, w = x.shape[:2]
    if (h, w) == tuple(size):
        return x
    return np.take(np.take(x, nearest_index(h, size[0]), axis=0), nearest_index(w, size[1]), axis=1)


# ----------------------------------------------------------------------------- postprocess

def postprocess(logits: torch.Tensor, rgb: Optional[torch.Tensor], spec: PostSpec, luts: Luts,
                impl: str = "torch") -> Dict[str, object]:
    """Logits at the inference size -> outputs at ``spec.out_size``.

    logits: (B, K, h, w) float (any float dtype). rgb: (B, H, W, 3) uint8 at the output size
    (needed for ``overlay``). Returns a dict of (B, ...) uint8 tensors (``impl="torch"``) or of
    lists of B numpy arrays (``impl="numpy"``, CPU only); ``probs`` is (B, K, H, W) float32.
    """
    want = spec.outputs
    logits = logits.float()
    out_size = tuple(spec.out_size)
    need_up = tuple(logits.shape[-2:]) != out_size
    res: Dict[str, object] = {}
    # The numpy path upsamples for the labels with OpenCV; the full upsampled logits only when
    # confidence or probabilities are asked for.
    np_labels = impl == "numpy" and spec.upsample == "logits" and need_up
    if "probs" in want or (spec.upsample == "logits" and ("confidence" in want or not np_labels)):
        up = F.interpolate(logits, size=out_size, mode="bilinear", align_corners=False) if need_up else logits
    if spec.upsample == "logits":
        labels = torch.from_numpy(upsample_labels_np(logits.numpy(), out_size)) if np_labels else argmax_labels(up)
        if "confidence" in want:
            res["confidence"] = confidence_u8(up)
    else:
        labels = argmax_labels(logits)
        if "confidence" in want:
            conf = confidence_u8(logits)
            res["confidence"] = resize_nearest(conf, out_size) if impl == "torch" else conf
    if "probs" in want:
        res["probs"] = up.softmax(1)

    if impl == "torch":
        if spec.upsample == "labels":
            labels = resize_nearest(labels, out_size)
        res["labels"] = labels
        if "color" in want or "overlay" in want:
            color = colorize(labels, luts.color)
            if "color" in want:
                res["color"] = color
            if "overlay" in want:
                res["overlay"] = blend(rgb, color, spec.alpha_w)
        if "drivable" in want:
            res["drivable"] = drivable_mask(labels, luts.drivable)
        return res

    if impl != "numpy":
        raise ValueError(f"impl must be torch or numpy, got {impl!r}")
    lab_np = labels.numpy()
    conf_np = res["confidence"].numpy() if "confidence" in res else None
    rgb_np = rgb.numpy() if rgb is not None and "overlay" in want else None
    out: Dict[str, list] = {k: [] for k in want if k in ("labels", "color", "overlay", "drivable", "confidence")}
    out["labels"] = []
    for b in range(lab_np.shape[0]):
        lab = lab_np[b]
        if spec.upsample == "labels":
            lab = resize_nearest_np(lab, out_size)
        out["labels"].append(lab)
        if conf_np is not None:
            c = conf_np[b]
            out["confidence"].append(resize_nearest_np(c, out_size) if spec.upsample == "labels" else c)
        if "color" in want or "overlay" in want:
            color = colorize_np(lab, luts.color_np, luts.color_packed)
            if "color" in want:
                out["color"].append(color)
            if "overlay" in want:
                out["overlay"].append(blend_np(rgb_np[b], color, spec.alpha_w))
        if "drivable" in want:
            out["drivable"].append(drivable_np(lab, luts.drivable_np))
    if "probs" in res:
        out["probs"] = res["probs"]
    return out
