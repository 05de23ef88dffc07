"""Evaluation: ``evaluate()`` (used by training) and the ``pspnet eval`` command."""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..data.datasets import build_dataset
from ..data.transforms import eval_preset
from .metrics import BinaryPRCurve, ConfusionMatrix

log = logging.getLogger(__name__)


def _forward_probs(model, image: torch.Tensor, window: Optional[Tuple[int, int]]) -> torch.Tensor:
    """Softmax probabilities (B, K, H, W) for ``image`` (B, 3, H, W), whole or by sliding window."""
    if window is None:
        return model(image)["out"].float().softmax(1)
    wh, ww = window
    b, _, h, w = image.shape
    ph, pw = max(wh - h, 0), max(ww - w, 0)
    if ph or pw:  # pad to at least one window; padded area is cropped off afterwards
        image = F.pad(image, (0, pw, 0, ph))
    H, W = image.shape[-2:]
    sh, sw = max(1, math.ceil(wh * 2 / 3)), max(1, math.ceil(ww * 2 / 3))
    rows = max(1, math.ceil((H - wh) / sh) + 1)
    cols = max(1, math.ceil((W - ww) / sw) + 1)
    probs, count = None, torch.zeros((1, 1, H, W), device=image.device)
    for r in range(rows):
        for c in range(cols):
            y0, x0 = min(r * sh, H - wh), min(c * sw, W - ww)
            p = model(image[..., y0:y0 + wh, x0:x0 + ww])["out"].float().softmax(1)
            if probs is None:
                probs = torch.zeros((b, p.shape[1], H, W), device=image.device)
            probs[..., y0:y0 + wh, x0:x0 + ww] += p
            count[..., y0:y0 + wh, x0:x0 + ww] += 1
    return (probs / count)[..., :h, :w]


@torch.inference_mode()
def predict_probs(model, image: torch.Tensor, out_size: Tuple[int, int], *, flip: bool = False,
                  scales: Sequence[float] = (1.0,), window: Optional[Tuple[int, int]] = None) -> torch.Tensor:
    """Class probabilities (B, K, *out_size) averaged over scales (and horizontal flip)."""
    total, n = None, 0
    h, w = image.shape[-2:]
    for s in scales:
        img = image if s == 1.0 else F.interpolate(
            image, size=(max(1, round(h * s)), max(1, round(w * s))), mode="bilinear", align_corners=False)
        variants = [img, img.flip(-1)] if flip else [img]
        for i, v in enumerate(variants):
            p = _forward_probs(model, v, window)
            if i == 1:
                p = p.flip(-1)
            p = F.interpolate(p, size=out_size, mode="bilinear", align_corners=False)
            total = p if total is None else total + p
            n += 1
    return total / n


@torch.inference_mode()
def evaluate(model, loader, device, *, num_classes: int, class_names: Sequence[str],
             ignore_index: int = 255, kitti: bool = False, flip: bool = False,
             scales: Sequence[float] = (1.0,), window: Optional[Tuple[int, int]] = None,
             progress: bool = False) -> Dict[str, object]:
    """Run the model over ``loader`` and return metrics.

    The image is resized to the inference size, the mask kept at label size. Metrics: miou, macc,
    allacc, iou/acc per class (+ maxf, ap for KITTI road).
    """
    model.eval()
    cm = ConfusionMatrix(num_classes, ignore_index, device=device)
    pr = BinaryPRCurve(device=device) if kitti else None
    for image, mask in tqdm(loader, desc="eval", disable=not progress, leave=False):
        image, mask = image.to(device, non_blocking=True), mask.to(device, non_blocking=True)
        probs = predict_probs(model, image, tuple(mask.shape[-2:]), flip=flip, scales=scales, window=window)
        cm.update(mask, probs.argmax(1))
        if pr is not None:
            pr.update(probs[:, 1], mask, ignore_index)
    cm.reduce_from_all_processes()
    result = cm.compute(class_names)
    if pr is not None:
        pr.reduce_from_all_processes()
        result.update({k: v for k, v in pr.compute().items() if k in ("maxf", "ap")})
    return result


def format_table(result: Dict[str, object]) -> str:
    lines = [f"{'class':<16} {'IoU':>7} {'Acc':>7}", "-" * 32]
    for name, iou in result["iou"].items():  # type: ignore[union-attr]
        acc = result["acc"][name]  # type: ignore[index]
        fmt = lambda v: "   n/a" if v is None else f"{100 * v:6.2f}"  # noqa: E731
        lines.append(f"{name:<16} {fmt(iou):>7} {fmt(acc):>7}")
    lines.append("-" * 32)
    for key in ("miou", "macc", "allacc", "maxf", "ap"):
        if key in result:
            lines.append(f"{key:<16} {100 * float(result[key]):7.2f}")
    return "\n".join(lines)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pspnet eval", description="Evaluate a checkpoint on a dataset split.")
    p.add_argument("--checkpoint", default="auto",
                   help="checkpoint file, or 'auto': the shipped model of --dataset for the device")
    p.add_argument("--dataset", choices=("camvid", "kitti_road"), default=None,
                   help="dataset (default: the checkpoint's)")
    p.add_argument("--root", default=None, help="dataset root (default: $PSPNET_DATA_ROOT or ../shared/data)")
    p.add_argument("--split", default="val", help="train, val, test, all, or a list file")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), default=None,
                   help="inference size (default: the checkpoint's input_size)")
    p.add_argument("--sliding-window", action="store_true",
                   help="slide a window of the inference size over the full-resolution image")
    p.add_argument("--flip", action="store_true", help="average with the horizontally flipped image")
    p.add_argument("--scales", type=float, nargs="+", default=[1.0], help="multi-scale factors")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N images")
    p.add_argument("--json", default=None, help="write metrics as JSON here")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    from ..models import CheckpointError, load_model
    from ..paths import data_root, resolve_checkpoint, resolve_device

    args = get_args_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    dataset = args.dataset or "kitti_road"
    ckpt = resolve_checkpoint(args.checkpoint, dataset=dataset, device=device)
    try:
        model, meta = load_model(ckpt, device)
    except CheckpointError as exc:
        log.error("%s", exc)
        return 2
    dataset = args.dataset or meta.get("dataset", "kitti_road")
    if meta.get("dataset") and meta["dataset"] != dataset:
        log.error("checkpoint %s was trained on %s, not %s", ckpt, meta["dataset"], dataset)
        return 2
    size = tuple(args.size) if args.size else (tuple(meta["input_size"]) if meta.get("input_size") else None)
    window = None
    if args.sliding_window:
        window, size = size, None  # slide inference-size windows over the full image
    ds = build_dataset(dataset, data_root(args.root), args.split,
                       transform=eval_preset(size=size, mean=meta["mean"], std=meta["std"]))
    if args.limit:
        ds.pairs = ds.pairs[: args.limit]
    loader = DataLoader(ds, batch_size=1, shuffle=False, num_workers=0)
    result = evaluate(model, loader, device, num_classes=len(meta["classes"]), class_names=meta["classes"],
                      ignore_index=meta["ignore_index"], kitti=dataset == "kitti_road", flip=args.flip,
                      scales=args.scales, window=window, progress=True)
    print(f"checkpoint: {ckpt}\ndataset: {dataset} split={args.split} images={len(ds)} "
          f"size={size or 'full'} window={window} flip={args.flip} scales={args.scales} device={device}")
    print(format_table(result))
    if args.json:
        out = {k: result[k] for k in ("miou", "macc", "allacc", "iou") if k in result}
        out.update({k: result[k] for k in ("maxf", "ap") if k in result})
        out.update(checkpoint=str(ckpt), dataset=dataset, split=args.split, images=len(ds))
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0
