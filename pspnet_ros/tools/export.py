"""``pspnet export``: write a checkpoint as ONNX and check it against PyTorch.

The graph maps a normalized (B, 3, h, w) float32 batch at the fixed inference size to
(B, K, h, w) logits (input ``input``, output ``logits``, dynamic batch). Adaptive pooling is
exported as constant averaging matrices for that size (exact), so the ONNX model only accepts
that size. Class names, palette, mean/std and the size are stored in the model's metadata
properties (``pspnet_meta``, JSON). With onnxruntime installed the export is checked on a real
frame (or a random one): max |logit difference| and label agreement are printed, and a
mismatch fails the command.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import List, Optional

import numpy as np

log = logging.getLogger(__name__)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pspnet export", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", default="auto", help="checkpoint file, or 'auto' (shipped model)")
    p.add_argument("--dataset", default="kitti_road", help="dataset of the shipped model ('auto')")
    p.add_argument("--device-model", default="cpu", choices=("cpu", "cuda"),
                   help="which shipped model 'auto' picks (the CPU or the CUDA one)")
    p.add_argument("--format", default="onnx", choices=("onnx",))
    p.add_argument("--out", default=None, help="output file (default: next to the checkpoint, .onnx)")
    p.add_argument("--size", default=None, help="inference size HxW (default: the checkpoint's)")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--static-batch", action="store_true", help="fixed batch size 1")
    p.add_argument("--no-check", action="store_true", help="skip the onnxruntime parity check")
    p.add_argument("--tolerance", type=float, default=1e-3,
                   help="max |logit difference| allowed, relative to max(1, max |logit|)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _check_frame(size, meta) -> np.ndarray:
    """Return a normalized (1, 3, h, w) input: a real KITTI frame if the data is there, else noise."""
    import cv2

    from ..paths import data_root

    img = None
    try:
        folder = data_root() / "kitti_road" / "image_2"
        first = sorted(folder.glob("*.jpg"))[:1] + sorted(folder.glob("*.png"))[:1]
        if first:
            img = cv2.cvtColor(cv2.imread(str(first[0])), cv2.COLOR_BGR2RGB)
    except OSError:
        img = None
    if img is None:
        img = np.random.default_rng(0).integers(0, 256, (size[0], size[1], 3), dtype=np.uint8)
    img = cv2.resize(img, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    x = (img.astype(np.float32) / 255.0 - np.asarray(meta["mean"], np.float32)) / np.asarray(meta["std"], np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def main(argv: Optional[List[str]] = None) -> int:
    args = get_args_parser().parse_args(argv)
    import torch

    from ..models import CheckpointError, load_model
    from ..paths import resolve_checkpoint
    from ..inference.runners import LogitsOnly, export_onnx, ort_session
    from ..inference.segmenter import parse_size

    try:
        ckpt = resolve_checkpoint(args.checkpoint, args.dataset, args.device_model)
        model, meta = load_model(ckpt, "cpu")
        size = parse_size(args.size or meta.get("input_size") or "", "--size")
    except (OSError, CheckpointError, ValueError) as exc:
        print(f"pspnet export: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else Path(ckpt).with_suffix(".onnx")
    out.parent.mkdir(parents=True, exist_ok=True)
    data = export_onnx(model, size, opset=args.opset, dynamic_batch=not args.static_batch)

    import onnx

    proto = onnx.load_from_string(data)
    info = {k: meta.get(k) for k in ("arch", "arch_kwargs", "classes", "palette", "mean", "std",
                                     "ignore_index", "dataset", "drivable_classes")}
    info["input_size"] = list(size)
    entry = proto.metadata_props.add()
    entry.key, entry.value = "pspnet_meta", json.dumps(info)
    onnx.save(proto, str(out))
    print(f"wrote {out} ({out.stat().st_size / 2 ** 20:.1f} MiB): input (B, 3, {size[0]}, {size[1]}) "
          f"-> logits (B, {len(meta['classes'])}, {size[0]}, {size[1]}), opset {args.opset}")

    if args.no_check:
        return 0
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        print("onnxruntime not installed: parity check skipped")
        return 0
    x = _check_frame(size, meta)
    with torch.inference_mode():
        ref = LogitsOnly(model.eval())(torch.from_numpy(x)).numpy()
    got = ort_session(out.read_bytes(), torch.get_num_threads()).run(None, {"input": x})[0]
    err = float(np.abs(got - ref).max())
    tol = args.tolerance * max(1.0, float(np.abs(ref).max()))
    agree = float((got.argmax(1) == ref.argmax(1)).mean())
    print(f"onnxruntime parity: max |logit diff| {err:.3g} (tolerance {tol:.3g}), "
          f"labels equal {100 * agree:.3f} %")
    if not err <= tol:
        print("pspnet export: onnxruntime output does not match PyTorch", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
