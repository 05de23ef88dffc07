"""The naive baseline the engine is measured against: what a first-attempt ROS node does.

One frame at a time, synchronous, eager FP32 PyTorch, and pre/post-processing with
numpy/OpenCV on the CPU: resize, normalize, forward, copy logits back, argmax, nearest resize
of the labels to the frame size, palette lookup, ``cv2.addWeighted`` overlay, ``np.isin`` mask.
It produces the same outputs as the engine's default set, so the comparison is like for like.
"""

from __future__ import annotations

import copy
from typing import Any, Dict, Mapping, Sequence, Tuple

import cv2
import numpy as np
import torch
from torch import nn


class NaiveSegmenter:
    def __init__(self, model: nn.Module, meta: Mapping[str, Any], inference_size: Tuple[int, int],
                 device: str = "cpu", drivable_classes: Sequence[str] = ("road",),
                 overlay_alpha: float = 0.5) -> None:
        # Own fp32 contiguous copy: the engine may have converted its model (channels_last...).
        self.model = copy.deepcopy(model).float().to(memory_format=torch.contiguous_format).to(device).eval()
        self.device = torch.device(device)
        self.size = tuple(inference_size)
        self.mean = np.asarray(meta["mean"], np.float32)
        self.std = np.asarray(meta["std"], np.float32)
        self.palette = np.asarray(meta["palette"], np.uint8)
        classes = list(meta["classes"])
        self.drivable_ids = [classes.index(c) for c in drivable_classes if c in classes]
        self.alpha = float(overlay_alpha)

    def __call__(self, frame_rgb: np.ndarray) -> Dict[str, np.ndarray]:
        """(H, W, 3) uint8 RGB -> labels, color, overlay, drivable at (H, W)."""
        h, w = frame_rgb.shape[:2]
        small = cv2.resize(frame_rgb, (self.size[1], self.size[0]), interpolation=cv2.INTER_LINEAR)
        x = (small.astype(np.float32) / 255.0 - self.mean) / self.std
        x = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)[None])).to(self.device)
        with torch.no_grad():
            logits = self.model(x)["out"][0].cpu().numpy()
        labels = logits.argmax(0).astype(np.uint8)
        labels = cv2.resize(labels, (w, h), interpolation=cv2.INTER_NEAREST)
        color = self.palette[labels]
        overlay = cv2.addWeighted(frame_rgb, 1.0 - self.alpha, color, self.alpha, 0.0)
        drivable = np.isin(labels, self.drivable_ids).astype(np.uint8) * 255
        return {"labels": labels, "color": color, "overlay": overlay, "drivable": drivable}
