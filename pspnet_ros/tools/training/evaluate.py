"""Evaluation: ``evaluate()`` (used by training) and the ``pspnet eval`` command."""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..data.classes import CLASSES_FILE, FOLDER, get_dataset_info
from ..data.datasets import DATASET_CLASSES, LABEL_SPACE, FolderDatasetError, build_dataset, parse_aspect
from ..data.transforms import eval_preset
from .metrics import BinaryPRCurve, ConfusionMatrix

log = logging.getLogger(__name__)
BEV_KEYS = ("maxf", "ap", "precision", "recall")


class KittiBevEval:
    """The KITTI road benchmark's bird's-eye-view MaxF / AP / precision / recall.

    Each frame's road probability and ground truth are warped onto the devkit's BEV grid
    (:class:`pspnet_ros.bev.GridSpec` defaults: 0.05 m, 6..46 m ahead, -10..10 m lateral) with
    that frame's calibration (P2, R0_rect, Tr_cam_to_road): probabilities bilinearly, labels by
    nearest pixel. Cells outside the image or the ground truth's valid area are ignored; the
    counts go into the same :class:`BinaryPRCurve` as the perspective metric.

    Args:
        calib_files: per dataset index, the calibration file, or None: such frames are skipped
            (``skipped`` names them; the caller warns).
    """

    def __init__(self, calib_files: Sequence[Optional[Path]], grid=None, device="cpu") -> None:
        from ... import bev

        self._bev = bev
        self.grid = grid or bev.GridSpec()
        self.calib_files = list(calib_files)
        self.curve = BinaryPRCurve(device=device)
        self.frames = 0
        self.skipped: List[int] = [i for i, f in enumerate(self.calib_files) if f is None]

    @property
    def expected(self) -> int:
        """Frames that have a calibration file (those the BEV metric will count)."""
        return len(self.calib_files) - len(self.skipped)

    def update(self, index: int, prob: torch.Tensor, mask: torch.Tensor, ignore_index: int = 255) -> None:
        """prob: (H, W) float road probability; mask: (H, W) int 0/1 with ``ignore_index``."""
        path = self.calib_files[index]
        if path is None:
            return
        calib = self._bev.read_kitti_calib(path)
        self.update_with(self._bev.GroundProjector(calib.k, tuple(mask.shape[-2:]), calib.camera_to_ground(),
                                                   self.grid), prob, mask, ignore_index)

    def update_with(self, projector, prob: torch.Tensor, mask: torch.Tensor, ignore_index: int = 255) -> None:
        """Warp one frame with ``projector`` (a :class:`pspnet_ros.bev.GroundProjector`) and count it."""
        gt = mask.detach().cpu().numpy()
        gt = np.where(gt == ignore_index, 255, gt).astype(np.uint8)
        bev_gt = projector.warp_labels(gt)  # 255 where not valid or ignored
        bev_prob = projector.warp_probability(prob.detach().float().cpu().numpy())
        bev_prob = np.nan_to_num(bev_prob, nan=0.0)
        self.curve.update(torch.from_numpy(bev_prob), torch.from_numpy(bev_gt.astype(np.int64)), 255)
        self.frames += 1

    def compute(self) -> Dict[str, float]:
        """{"maxf", "ap", "precision", "recall"} as fractions (precision/recall at MaxF)."""
        return {k: v for k, v in self.curve.compute().items() if k in BEV_KEYS}


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
             progress: bool = False, bev: Optional[KittiBevEval] = None) -> Dict[str, object]:
    """Run the model over ``loader`` and return metrics.

    The image is resized to the inference size, the mask kept at label size. Metrics: miou, macc,
    allacc, iou/acc per class (+ maxf, ap for KITTI road, and "bev": {maxf, ap, precision,
    recall} when ``bev`` is given; the loader must not shuffle, ``bev`` is indexed by dataset
    position).
    """
    model.eval()
    cm = ConfusionMatrix(num_classes, ignore_index, device=device)
    pr = BinaryPRCurve(device=device) if kitti else None
    seen = 0
    for image, mask in tqdm(loader, desc="eval", disable=not progress, leave=False):
        image, mask = image.to(device, non_blocking=True), mask.to(device, non_blocking=True)
        probs = predict_probs(model, image, tuple(mask.shape[-2:]), flip=flip, scales=scales, window=window)
        cm.update(mask, probs.argmax(1))
        if pr is not None:
            pr.update(probs[:, 1], mask, ignore_index)
        if bev is not None:
            for j in range(image.shape[0]):
                bev.update(seen + j, probs[j, 1], mask[j], ignore_index)
        seen += image.shape[0]
    return _results(cm, pr, bev, class_names)


def _results(cm: ConfusionMatrix, pr: Optional[BinaryPRCurve], bev: Optional[KittiBevEval],
             class_names: Sequence[str]) -> Dict[str, object]:
    """Reduce over processes (DDP) and compute: miou, ..., maxf/ap with ``pr``, "bev" with ``bev``."""
    cm.reduce_from_all_processes()
    result = cm.compute(class_names)
    if pr is not None:
        pr.reduce_from_all_processes()
        result.update({k: v for k, v in pr.compute().items() if k in ("maxf", "ap")})
    if bev is not None:
        result["bev"] = bev.compute()
    return result


@torch.inference_mode()
def evaluate_segmenter(seg, ds, *, kitti: bool = False, progress: bool = False,
                       bev: Optional[KittiBevEval] = None) -> Dict[str, object]:
    """Metrics of a :class:`pspnet_ros.inference.Segmenter` on ``ds``: the path the node runs.

    Each raw frame (full camera resolution, uint8 RGB) goes through ``Segmenter.predict``: the
    engine's resize/normalize, the configured backend and precision (e.g. ONNX Runtime INT8),
    bilinear upsampling of the logits to the frame and the argmax. Labels are the node's
    labels; probabilities (softmax of the upsampled logits) feed KITTI's MaxF/AP and the BEV
    metric. Same metric definitions as :func:`evaluate`.
    """
    names = seg.classes
    cm = ConfusionMatrix(len(names), int(seg.meta.get("ignore_index", 255)))
    pr = BinaryPRCurve() if kitti else None
    want_probs = kitti or bev is not None
    for i in tqdm(range(len(ds)), desc="eval", disable=not progress, leave=False):
        image, mask = ds.load(i)
        res = seg.predict(np.ascontiguousarray(image), return_probs=want_probs, outputs=("labels",))[0]
        target = torch.from_numpy(mask.astype(np.int64))[None]
        cm.update(target, torch.from_numpy(np.ascontiguousarray(res.labels)).long()[None])
        if want_probs:
            probs = torch.as_tensor(res.probs)
            if pr is not None:
                pr.update(probs[1][None], target, cm.ignore_index)
            if bev is not None:
                bev.update(i, probs[1], target[0], cm.ignore_index)
    return _results(cm, pr, bev, names)


def bev_evaluator(ds) -> KittiBevEval:
    """Build the :class:`KittiBevEval` of a KITTI road dataset (``<root>/calib/<stem>.txt``).

    Frames without a calibration file are named in a warning and skipped, never silently.
    """
    from ...bev import kitti_calib_for

    files = [kitti_calib_for(img, Path(ds.root) / "calib") for img, _ in ds.pairs]
    ev = KittiBevEval(files)
    if ev.skipped:
        names = [ds.stem(i) for i in ev.skipped]
        log.warning("--bev: no calibration file in %s for %d frame(s), skipped in the BEV metric: %s",
                    Path(ds.root) / "calib", len(names), ", ".join(names))
    return ev


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
    for key in BEV_KEYS:  # bird's-eye view (KITTI road benchmark metric space)
        if key in result.get("bev", {}):
            lines.append(f"{'bev ' + key:<16} {100 * float(result['bev'][key]):7.2f}")
    return "\n".join(lines)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pspnet eval", description="Evaluate a checkpoint on a dataset split.")
    p.add_argument("--checkpoint", default="auto",
                   help="checkpoint file, or 'auto': the shipped model of --dataset for the device")
    p.add_argument("--dataset", choices=tuple(DATASET_CLASSES), default=None,
                   help="dataset (default: the checkpoint's); camvid_drivable: CamVid scored as drivable "
                        "(road) vs not, for the drivable-area models; folder: your own images/, masks/ "
                        "and classes.yaml under --root")
    p.add_argument("--root", default=None, help="dataset root (default: $PSPNET_DATA_ROOT or ../shared/data); "
                                                "for folder: the folder")
    p.add_argument("--split", default="val", help="train, val, test, all, or a list file")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), default=None,
                   help="inference size (default: auto, each frame's aspect ratio at the checkpoint's "
                        "pixel budget, as the node runs; the checkpoint's input_size for its own camera)")
    p.add_argument("--crop-aspect", default=None, metavar="W:H",
                   help="centre-crop every frame and label to this aspect first (e.g. 16:9: another "
                        "camera's shape from the same pictures; the BEV metric is not defined then)")
    p.add_argument("--sliding-window", action="store_true",
                   help="slide a window of the inference size over the full-resolution image")
    p.add_argument("--flip", action="store_true", help="average with the horizontally flipped image")
    p.add_argument("--scales", type=float, nargs="+", default=[1.0], help="multi-scale factors")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N images")
    p.add_argument("--bev", action="store_true",
                   help="KITTI road: also score in the benchmark's bird's-eye view (each frame's "
                        "calib/<stem>.txt; frames without one are named and skipped)")
    p.add_argument("--precision", default=None, choices=("auto", "fp32", "fp16", "bf16", "int8"),
                   help="evaluate the node's inference path (pspnet_ros.inference.Segmenter: its "
                        "preprocessing, backend and precision, e.g. int8 = the INT8 ONNX model) "
                        "instead of the training-time PyTorch path (default)")
    p.add_argument("--backend", default=None, choices=("auto", "torch", "onnxruntime", "openvino"),
                   help="backend of the node path (implies it; default auto)")
    p.add_argument("--json", default=None, help="write metrics as JSON here")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    from ...models import CheckpointError, load_model
    from ...paths import data_root, resolve_checkpoint, resolve_device

    args = get_args_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    dataset = args.dataset or "kitti_road"
    if dataset == FOLDER and args.checkpoint in (None, "", "auto"):
        log.error("--dataset folder: give the fine-tuned model with --checkpoint (no shipped model knows your classes)")
        return 2
    ckpt = resolve_checkpoint(args.checkpoint, dataset=dataset, device=device)
    try:
        model, meta = load_model(ckpt, device)
    except CheckpointError as exc:
        log.error("%s", exc)
        return 2
    dataset = args.dataset or meta.get("dataset", "kitti_road")
    # A folder may score any model with its classes (e.g. the shipped one on your camera's frames).
    if dataset != FOLDER and meta.get("dataset") and meta["dataset"] != LABEL_SPACE.get(dataset, dataset):
        log.error("checkpoint %s has the classes of %s, not of %s", ckpt, meta["dataset"], dataset)
        return 2
    if dataset == FOLDER:
        try:  # the folder's classes must be the model's, in order: the metric indexes both alike
            info = get_dataset_info(FOLDER, data_root(args.root))
        except ValueError as exc:
            log.error("%s", exc)
            return 2
        if list(info.classes) != list(meta["classes"]):
            log.error("checkpoint %s has the classes %s, %s lists %s", ckpt, list(meta["classes"]),
                      Path(data_root(args.root)) / CLASSES_FILE, list(info.classes))
            return 2
    try:
        crop = parse_aspect(args.crop_aspect) if args.crop_aspect else None
    except ValueError as exc:
        log.error("--crop-aspect: %s", exc)
        return 2
    if crop and args.bev:
        log.error("--bev needs the full KITTI frames (their calibration); drop --crop-aspect")
        return 2
    model_size = tuple(meta["input_size"]) if meta.get("input_size") else None
    size = tuple(args.size) if args.size else model_size
    auto = not args.size and model_size is not None
    window = None
    if args.sliding_window:
        window, size, auto = size, None, False  # slide inference-size windows over the full image
    try:
        ds = build_dataset(dataset, data_root(args.root), args.split, crop_aspect=crop,
                           transform=eval_preset(size=size, mean=meta["mean"], std=meta["std"], auto=auto))
    except FolderDatasetError as exc:
        log.error("%s", exc)
        return 2
    if args.limit:
        ds.pairs = ds.pairs[: args.limit]
    bev = None
    if args.bev:
        if dataset != "kitti_road":
            log.error("--bev needs KITTI road (its calibration files); dataset is %s", dataset)
            return 2
        bev = bev_evaluator(ds)
        if bev.expected == 0:
            log.error("--bev: no calibration file for any of the %d frames in %s", len(ds), ds.root / "calib")
            return 2
    node_path = args.precision is not None or args.backend is not None
    path = "model (training-time PyTorch)"
    if node_path:
        if args.flip or args.scales != [1.0] or args.sliding_window:
            log.error("--precision/--backend evaluate the node's single-pass path: no --flip, --scales "
                      "or --sliding-window")
            return 2
        from ...inference import Segmenter

        try:
            seg = Segmenter.from_checkpoint(str(ckpt), device=device, precision=args.precision or "auto",
                                            backend=args.backend or "auto",
                                            inference_size=None if auto else size)
        except (ValueError, RuntimeError, OSError) as exc:
            log.error("%s", exc)
            return 2
        path = f"node (Segmenter: {seg.backend} {seg.precision}, {seg.num_threads} threads)"
        ds = build_dataset(dataset, data_root(args.root), args.split, crop_aspect=crop)
        if args.limit:
            ds.pairs = ds.pairs[: args.limit]
        if bev is not None:
            bev = bev_evaluator(ds)
        result = evaluate_segmenter(seg, ds, kitti=dataset == "kitti_road", progress=True, bev=bev)
        ran = seg.sizes()
        path = "node (Segmenter: " + ", ".join(f"{k} {v['backend']} {v['precision']}" for k, v in ran.items()) \
            + f"; {seg.num_threads} threads)"
    else:
        loader = DataLoader(ds, batch_size=1, shuffle=False, num_workers=0)
        result = evaluate(model, loader, device, num_classes=len(meta["classes"]), class_names=meta["classes"],
                          ignore_index=meta["ignore_index"], kitti=dataset == "kitti_road", flip=args.flip,
                          scales=args.scales, window=window, progress=True, bev=bev)
    print(f"checkpoint: {ckpt}\ndataset: {dataset} split={args.split} images={len(ds)} "
          f"size={'auto ' if auto else ''}{size or 'full'} window={window} flip={args.flip} "
          f"scales={args.scales} device={device}\n"
          f"path: {path}")
    if bev is not None:
        print(f"bev: {bev.frames} frames on a {bev.grid.width}x{bev.grid.height} grid of "
              f"{bev.grid.resolution:g} m (x {bev.grid.x_range[0]:g}..{bev.grid.x_range[1]:g} m ahead, "
              f"y {bev.grid.y_range[0]:g}..{bev.grid.y_range[1]:g} m lateral)"
              + (f", {len(bev.skipped)} skipped without calib" if bev.skipped else ""))
    print(format_table(result))
    if args.json:
        out = {k: result[k] for k in ("miou", "macc", "allacc", "iou") if k in result}
        out.update({k: result[k] for k in ("maxf", "ap") if k in result})
        if bev is not None:
            out["bev"] = {**result["bev"], "images": bev.frames,
                          "skipped": [ds.stem(i) for i in bev.skipped]}
        out.update(checkpoint=str(ckpt), dataset=dataset, split=args.split, images=len(ds), path=path,
                   crop_aspect=args.crop_aspect)
        if node_path:
            out.update(backend=seg.backend, precision=seg.precision, sizes=seg.sizes())
        out.update(inference_size="auto" if auto else list(size) if size else None)
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0
