"""``pspnet quantize``: static post-training INT8 quantization of a checkpoint (ONNX Runtime, QDQ).

The checkpoint's fp32 ONNX export is quantized with ONNX Runtime's static quantizer: QDQ format,
per-channel symmetric int8 weights, uint8 activations whose ranges are calibrated on training
frames preprocessed exactly as the node preprocesses camera frames on CPU
(:func:`pspnet_ros.inference.ops.preprocess_np` on the full frame). The result, ``<checkpoint stem>.int8.onnx``
next to the checkpoint, holds the model metadata (``pspnet_meta``, as ``pspnet export`` writes
it) and the quantization record (``pspnet_int8``: the checkpoint's SHA-256, the inference
size, the calibration frames and method, the tool versions and the accuracy check). ONNX
Runtime and OpenVINO both run it; the runtime reads it with :mod:`pspnet_ros.inference.int8`.

The accuracy check evaluates the node's path (:func:`.training.evaluate.evaluate_segmenter`) on
the validation split in fp32 and in INT8. ``precision: auto`` on CPU picks INT8 only when the
check passed: mIoU within 1.0 point of fp32, and MaxF within 0.5 point on KITTI road.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .data.datasets import build_dataset
from ..inference import ops
from ..inference.int8 import META_KEY, RECORD_KEY, TOLERANCE, int8_path, sha256_file
from ..inference.runners import fp32_onnx
from ..inference.segmenter import Segmenter, parse_size
from ..models import CheckpointError, load_model
from ..paths import data_root, resolve_checkpoint
from .training.evaluate import evaluate_segmenter

log = logging.getLogger(__name__)

METHODS = ("minmax", "percentile", "entropy")
Size = Tuple[int, int]


# ----------------------------------------------------------------------------- calibration


def calibration_inputs(meta: Mapping[str, Any], size: Size, dataset: str, root: Union[str, Path],
                       split: str = "train", frames: int = 64) -> Tuple[List[np.ndarray], List[str]]:
    """Network inputs (1, 3, h, w) float32 for ``frames`` evenly spaced frames of ``split``.

    Preprocessed from the full-resolution frame by :func:`pspnet_ros.inference.ops.preprocess_np`, the CPU path
    the node runs INT8 with. Returns the inputs and the frames' stems (recorded in the INT8 file).
    """
    ds = build_dataset(dataset, Path(root), split)
    if len(ds) == 0:
        raise ValueError(f"{dataset} {split} has no frames under {root}")
    n = min(int(frames), len(ds))
    idx = sorted({int(round(i * (len(ds) - 1) / max(1, n - 1))) for i in range(n)})
    mean255 = np.asarray(meta["mean"], np.float32) * 255.0
    inv_std255 = 1.0 / (np.asarray(meta["std"], np.float32) * 255.0)
    inputs, stems = [], []
    for i in idx:
        image, _ = ds.load(i)
        x, _ = ops.preprocess_np(np.ascontiguousarray(image)[None], size, mean255, inv_std255)
        inputs.append(np.ascontiguousarray(x.numpy()))
        stems.append(ds.stem(i))
    return inputs, stems


def quantize_onnx(fp32: bytes, inputs: Sequence[np.ndarray], *, method: str = "minmax",
                  per_channel: bool = True) -> bytes:
    """Quantize an fp32 ONNX graph to static INT8 QDQ, calibrated on ``inputs``."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    calib = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
             "entropy": CalibrationMethod.Entropy}[method]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(inputs)

        def get_next(self):
            x = next(self._it, None)
            return None if x is None else {"input": x}

    with tempfile.TemporaryDirectory(prefix="pspnet_quant_") as tmp:
        src, pre, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(fp32)
        quant_pre_process(str(src), str(pre))  # shape inference + graph optimizations first
        quantize_static(str(pre), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=calib,
                        extra_options={"CalibTensorRangeSymmetric": False})
        return dst.read_bytes()


def write_int8(data: bytes, out: Union[str, Path], meta: Mapping[str, Any], record: Mapping[str, Any]) -> None:
    """Save the INT8 graph with the model metadata and the quantization record."""
    import onnx

    proto = onnx.load_from_string(data)
    del proto.metadata_props[:]
    info = {k: meta.get(k) for k in ("arch", "arch_kwargs", "classes", "palette", "mean", "std",
                                     "ignore_index", "dataset", "drivable_classes")}
    info["input_size"] = list(record["input_size"])
    for key, value in ((META_KEY, info), (RECORD_KEY, record)):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    tmp = Path(str(out) + ".tmp")
    onnx.save(proto, str(tmp))
    tmp.replace(out)


# ----------------------------------------------------------------------------- accuracy check


def check_accuracy(checkpoint: Path, int8_file: Path, dataset: str, root: Union[str, Path], split: str,
                   size: Size, threads: Optional[int] = None) -> Dict[str, Any]:
    """Evaluate the node path in fp32 and INT8 (ONNX Runtime) on ``split``; return the record."""
    ds = build_dataset(dataset, Path(root), split)
    kitti = dataset == "kitti_road"
    keys = ("miou", "maxf") if kitti else ("miou",)
    res: Dict[str, Dict[str, float]] = {}
    for precision in ("fp32", "int8"):
        seg = Segmenter.from_checkpoint(str(checkpoint), device="cpu", precision=precision, backend="onnxruntime",
                                        inference_size=size, num_threads=threads, int8_model=int8_file)
        t0 = time.perf_counter()
        m = evaluate_segmenter(seg, ds, kitti=kitti)
        res[precision] = {k: round(100.0 * float(m[k]), 2) for k in keys}
        log.info("%s %s: %s (%.0f s)", split, precision, res[precision], time.perf_counter() - t0)
    delta = {k: round(res["fp32"][k] - res["int8"][k], 2) for k in keys}
    holds = all(delta[k] <= TOLERANCE[k] for k in keys)
    summary = ", ".join(f"{k} {res['int8'][k]:.2f} vs fp32 {res['fp32'][k]:.2f} "
                        f"({-delta[k]:+.2f}, allowed -{TOLERANCE[k]:.1f})" for k in keys)
    return {"split": split, "frames": len(ds), "fp32": res["fp32"], "int8": res["int8"], "loss": delta,
            "tolerance": {k: TOLERANCE[k] for k in keys}, "holds": holds,
            "summary": f"{dataset} {split} ({len(ds)} frames, ONNX Runtime): {summary}"}


# ----------------------------------------------------------------------------- CLI


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pspnet quantize", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", default="auto", help="checkpoint file, or 'auto' (shipped model of --dataset)")
    p.add_argument("--dataset", default=None, choices=("kitti_road", "camvid", "camvid_drivable", "folder"),
                   help="calibration/check dataset (default: the checkpoint's); folder: your own "
                        "images/, masks/ and classes.yaml under --root")
    p.add_argument("--root", default=None, help="dataset root (default: $PSPNET_DATA_ROOT or ../shared/data); "
                                                "for folder: the folder")
    p.add_argument("--size", default=None, help="inference size HxW (default: the checkpoint's)")
    p.add_argument("--calib-split", default="train", help="split the calibration frames come from")
    p.add_argument("--calib-frames", type=int, default=64, help="calibration frames (evenly spaced)")
    p.add_argument("--method", default="minmax", choices=METHODS, help="activation range calibration")
    p.add_argument("--per-tensor", action="store_true", help="per-tensor weight scales (default per channel)")
    p.add_argument("--check-split", default="val", help="split of the accuracy check")
    p.add_argument("--no-check", action="store_true",
                   help="skip the accuracy check (precision auto then keeps fp32 for this model)")
    p.add_argument("--out", default=None, help="output file (default: <checkpoint stem>.int8.onnx next to it)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = get_args_parser().parse_args(argv)
    # The quantizer logs every bias-scale adjustment at INFO on the root logger: keep it at WARNING.
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(message)s")
    logging.getLogger("pspnet_ros").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    import onnxruntime
    import torch


    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        ckpt = resolve_checkpoint(args.checkpoint, args.dataset or "kitti_road", "cpu")
        model, meta = load_model(ckpt, "cpu")
        size = parse_size(args.size or meta.get("input_size") or "", "--size")
    except (OSError, CheckpointError, ValueError) as exc:
        print(f"pspnet quantize: {exc}", file=sys.stderr)
        return 2
    dataset = args.dataset or meta.get("dataset") or "kitti_road"
    root = data_root(args.root)
    own = meta.get("input_size") and [int(v) for v in meta["input_size"]] == list(size)
    out = Path(args.out) if args.out else int8_path(ckpt, None if own else size)
    t0 = time.perf_counter()
    try:
        inputs, stems = calibration_inputs(meta, size, dataset, root, args.calib_split, args.calib_frames)
    except (OSError, ValueError) as exc:
        print(f"pspnet quantize: calibration frames: {exc}", file=sys.stderr)
        return 2
    data = quantize_onnx(fp32_onnx(model, size), inputs, method=args.method, per_channel=not args.per_tensor)
    import onnx

    record: Dict[str, Any] = {
        "checkpoint": Path(ckpt).name, "checkpoint_sha256": sha256_file(ckpt), "input_size": list(size),
        "format": "QDQ", "weights": "int8 symmetric, " + ("per-tensor" if args.per_tensor else "per-channel"),
        "activations": "uint8 asymmetric", "calibration": {
            "dataset": dataset, "split": args.calib_split, "frames": len(stems), "method": args.method,
            "stems": stems},
        "onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__, "torch": torch.__version__,
        "date": datetime.date.today().isoformat(),
        "command": "pspnet quantize " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    write_int8(data, out, meta, record)
    print(f"wrote {out} ({out.stat().st_size / 2 ** 20:.1f} MiB, {len(stems)} calibration frames from "
          f"{dataset} {args.calib_split}, {args.method}, {time.perf_counter() - t0:.0f} s)")
    if args.no_check:
        print("accuracy not checked: precision auto keeps fp32 for this model")
        return 0
    try:
        acc = check_accuracy(Path(ckpt), out, dataset, root, args.check_split, size, args.threads)
    except (OSError, ValueError) as exc:
        print(f"pspnet quantize: accuracy check on {args.check_split}: {exc}", file=sys.stderr)
        return 2
    record["accuracy"] = acc
    write_int8(data, out, meta, record)
    print(("accuracy holds: " if acc["holds"] else "accuracy does NOT hold (precision auto keeps fp32): ")
          + acc["summary"])
    return 0 if acc["holds"] else 1


if __name__ == "__main__":
    sys.exit(main())
