"""Paired image/mask augmentations built on ``torchvision.transforms.v2.functional``.

Every transform takes and returns ``(image, mask)``: image (3, H, W) uint8 (float after
``Normalize``), mask (H, W) int64. Geometry is applied to both; the mask always uses nearest
interpolation (class ids must not be blended) and is padded/filled with the ignore index so
invented pixels never count in the loss. Photometric changes touch the image only.
"""

from __future__ import annotations

import math
import random
from typing import Callable, List, Optional, Sequence, Tuple

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from ...inference.sizing import auto_inference_size
from .classes import IGNORE_INDEX

Size = Tuple[int, int]


def _resize_pair(image, mask, size: Size):
    image = TF.resize(image, list(size), interpolation=InterpolationMode.BILINEAR, antialias=True)
    mask = TF.resize(mask[None], list(size), interpolation=InterpolationMode.NEAREST)[0]
    return image, mask


class Compose:
    def __init__(self, transforms: Sequence[Callable]) -> None:
        self.transforms = list(transforms)

    def __call__(self, image, mask):
        for t in self.transforms:
            image, mask = t(image, mask)
        return image, mask

    def __repr__(self) -> str:
        return "Compose(" + ", ".join(type(t).__name__ for t in self.transforms) + ")"


class ResizeShort:
    """Resize so the shorter side is ``size`` (aspect ratio kept)."""

    def __init__(self, size: int) -> None:
        self.size = int(size)

    def __call__(self, image, mask):
        h, w = image.shape[-2:]
        s = self.size / min(h, w)
        return _resize_pair(image, mask, (max(1, round(h * s)), max(1, round(w * s))))


class Resize:
    """Resize to exactly (h, w)."""

    def __init__(self, size: Size) -> None:
        self.size = (int(size[0]), int(size[1]))

    def __call__(self, image, mask):
        return _resize_pair(image, mask, self.size)


class ResizeToArea:
    """Resize to about ``pixels`` pixels with the aspect ratio kept.

    Frames of every camera then reach the network at the pixel budget the node's
    ``inference_size: auto`` gives them, whatever their resolution.
    """

    def __init__(self, pixels: int) -> None:
        if int(pixels) <= 0:
            raise ValueError(f"pixel budget must be positive, got {pixels}")
        self.pixels = int(pixels)

    def __call__(self, image, mask):
        h, w = image.shape[-2:]
        s = math.sqrt(self.pixels / float(h * w))
        return _resize_pair(image, mask, (max(1, round(h * s)), max(1, round(w * s))))


class RandomAspect:
    """Stretch the width by a factor drawn log-uniformly from ``aspect_range`` (height kept).

    Cameras differ in pixel aspect and in how drivers crop and scale; a road seen 20 % wider
    is still a road.
    """

    def __init__(self, aspect_range: Tuple[float, float] = (0.8, 1.25)) -> None:
        lo, hi = float(aspect_range[0]), float(aspect_range[1])
        if not 0 < lo <= hi:
            raise ValueError(f"aspect_range must be 0 < lo <= hi, got {aspect_range}")
        self.lo, self.hi = math.log(lo), math.log(hi)

    def __call__(self, image, mask):
        if self.lo == self.hi == 0.0:
            return image, mask
        a = math.exp(random.uniform(self.lo, self.hi))
        h, w = image.shape[-2:]
        return _resize_pair(image, mask, (h, max(1, round(w * a))))


class RandomScale:
    """Scale by a factor drawn uniformly from ``scale_range`` (0.5-2.0 in PSPNet)."""

    def __init__(self, scale_range: Tuple[float, float] = (0.5, 2.0)) -> None:
        self.lo, self.hi = float(scale_range[0]), float(scale_range[1])

    def __call__(self, image, mask):
        s = random.uniform(self.lo, self.hi)
        h, w = image.shape[-2:]
        return _resize_pair(image, mask, (max(1, round(h * s)), max(1, round(w * s))))


class RandomRotation:
    """Rotate by an angle in [-degrees, degrees].

    Uncovered image corners are black, uncovered mask corners are ignore.
    """

    def __init__(self, degrees: float = 10.0, p: float = 0.5) -> None:
        self.degrees, self.p = float(degrees), float(p)

    def __call__(self, image, mask):
        if self.degrees <= 0 or random.random() >= self.p:
            return image, mask
        angle = random.uniform(-self.degrees, self.degrees)
        image = TF.rotate(image, angle, interpolation=InterpolationMode.BILINEAR, fill=0)
        mask = TF.rotate(mask[None], angle, interpolation=InterpolationMode.NEAREST,
                         fill=IGNORE_INDEX)[0]
        return image, mask


class RandomGaussianBlur:
    """Blur the image only (labels stay sharp)."""

    def __init__(self, p: float = 0.5, sigma: Tuple[float, float] = (0.1, 2.0)) -> None:
        self.p, self.sigma = float(p), sigma

    def __call__(self, image, mask):
        if random.random() >= self.p:
            return image, mask
        sigma = random.uniform(*self.sigma)
        k = max(3, 2 * math.ceil(2 * sigma) + 1)
        return TF.gaussian_blur(image, [k, k], [sigma, sigma]), mask


class RandomHorizontalFlip:
    def __init__(self, p: float = 0.5) -> None:
        self.p = float(p)

    def __call__(self, image, mask):
        if random.random() < self.p:
            return TF.horizontal_flip(image), TF.horizontal_flip(mask)
        return image, mask


class RandomCrop:
    """Random (h, w) crop; smaller inputs are first padded at the bottom/right (image with 0, mask with ignore)."""

    def __init__(self, size: Size) -> None:
        self.size = (int(size[0]), int(size[1]))

    def __call__(self, image, mask):
        ch, cw = self.size
        h, w = image.shape[-2:]
        ph, pw = max(ch - h, 0), max(cw - w, 0)
        if ph or pw:
            image = TF.pad(image, [0, 0, pw, ph], fill=0)
            mask = TF.pad(mask[None], [0, 0, pw, ph], fill=IGNORE_INDEX)[0]
            h, w = image.shape[-2:]
        top, left = random.randint(0, h - ch), random.randint(0, w - cw)
        return (TF.crop(image, top, left, ch, cw), mask[top:top + ch, left:left + cw])


class ColorJitter:
    """Brightness/contrast/saturation/hue jitter on the image only."""

    def __init__(self, brightness=0.3, contrast=0.3, saturation=0.3, hue=0.02, p: float = 0.8) -> None:
        self.b, self.c, self.s, self.h, self.p = brightness, contrast, saturation, hue, p

    def __call__(self, image, mask):
        if random.random() >= self.p:
            return image, mask
        ops: List[Callable] = [
            lambda im: TF.adjust_brightness(im, random.uniform(1 - self.b, 1 + self.b)),
            lambda im: TF.adjust_contrast(im, random.uniform(1 - self.c, 1 + self.c)),
            lambda im: TF.adjust_saturation(im, random.uniform(1 - self.s, 1 + self.s)),
            lambda im: TF.adjust_hue(im, random.uniform(-self.h, self.h)),
        ]
        random.shuffle(ops)
        for op in ops:
            image = op(image)
        return image, mask


class ToFloatNormalize:
    """uint8 -> float in [0, 1] -> (x - mean) / std. Mask untouched."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean, self.std = list(mean), list(std)

    def __call__(self, image, mask):
        image = TF.to_dtype(image, torch.float32, scale=True)
        return TF.normalize(image, self.mean, self.std), mask


def train_preset(*, crop_size: Size, base_size: Optional[int] = None,
                 scale_range: Tuple[float, float] = (0.5, 2.0), rotate: float = 10.0,
                 blur_p: float = 0.3, flip_p: float = 0.5, jitter_p: float = 0.8,
                 mean: Sequence[float], std: Sequence[float], pixel_budget: Optional[int] = None,
                 aspect_range: Optional[Tuple[float, float]] = None) -> Compose:
    """Build the training transform.

    Resize (short side to ``base_size``, or to ``pixel_budget`` pixels), random scale and
    aspect, rotation, blur, flip, crop, jitter, normalize.
    """
    ts: List[Callable] = []
    if pixel_budget:
        ts.append(ResizeToArea(pixel_budget))
    elif base_size:
        ts.append(ResizeShort(base_size))
    ts.append(RandomScale(scale_range))
    if aspect_range:
        ts.append(RandomAspect(aspect_range))
    ts += [RandomRotation(rotate), RandomGaussianBlur(blur_p),
           RandomHorizontalFlip(flip_p), RandomCrop(crop_size), ColorJitter(p=jitter_p),
           ToFloatNormalize(mean, std)]
    return Compose(ts)


def eval_preset(*, size: Optional[Size] = None, mean: Sequence[float], std: Sequence[float],
                auto: bool = False) -> Compose:
    """Resize the image to the inference size (h, w) if given, normalize.

    With ``auto``, ``size`` is the model's size and each frame gets its aspect-true size under
    that pixel budget (:func:`pspnet_ros.inference.sizing.auto_inference_size`). The mask keeps
    its full resolution: evaluation upsamples logits back to the label size.
    """
    ts: List[Callable] = []
    if size and auto:
        ts.append(ResizeImageAuto(size))
    elif size:
        ts.append(ResizeImageOnly(size))
    ts.append(ToFloatNormalize(mean, std))
    return Compose(ts)


class ResizeImageAuto:
    """Resize the image to its aspect-true inference size and keep the full-resolution mask.

    The size is the node's ``inference_size: auto`` for the frame.
    """

    def __init__(self, model_size: Size) -> None:
        self.model_size = (int(model_size[0]), int(model_size[1]))

    def __call__(self, image, mask):
        size = auto_inference_size(image.shape[-2:], self.model_size)
        return TF.resize(image, list(size), interpolation=InterpolationMode.BILINEAR,
                         antialias=True), mask


class ResizeImageOnly:
    """Resize the image to the inference size and keep the full-resolution mask.

    Metrics are computed at label resolution after upsampling the logits, as the node publishes
    them.
    """

    def __init__(self, size: Size) -> None:
        self.size = (int(size[0]), int(size[1]))

    def __call__(self, image, mask):
        return TF.resize(image, list(self.size), interpolation=InterpolationMode.BILINEAR,
                         antialias=True), mask
