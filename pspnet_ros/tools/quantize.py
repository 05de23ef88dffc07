"""``pspnet quantize``: static post-training INT8 quantization of a checkpoint (ONNX Runtime, QDQ).

The checkpoint's fp32 ONNX export is quantized with ONNX Runtime's static quantizer: QDQ format,
per-channel symmetric 7-bit weights (``reduce_range``: x86 CPUs without VNNI saturate 8-bit ones,
see :func:`quantize_onnx`), uint8 activations whose ranges are calibrated on training
frames preprocessed exactly as the node preprocesses camera frames on CPU
(:func:`pspnet_ros.inference.ops.preprocess_np` on the full frame). The result, ``<checkpoint stem>.int8.onnx``
next to the checkpoint, holds the model metadata (``pspnet_meta``, as ``pspnet export`` writes
it) and the quantization record (``pspnet_int8``: the checkpoint's SHA-256, the graph's SHA-256,
the inference size, the calibration frames and method, the tool versions and the accuracy check). ONNX
Runtime and OpenVINO both run it; the runtime reads it with :mod:`pspnet_ros.inference.int8`.

The accuracy check evaluates the node's path (:func:`.training.evaluate.evaluate_segmenter`) on
the validation split in fp32 and in INT8 on every INT8 backend ``backend: auto`` may pick
(OpenVINO, then ONNX Runtime), and records the CPU it ran on (its flags and class, see
:mod:`pspnet_ros.inference.int8_check`) and the self-check reference. ``precision: auto`` on CPU
picks INT8 only when the check passed (mIoU within 1.0 point of fp32, and MaxF within 0.5 point
on KITTI road) and holds on the running CPU: the same CPU class and backend, or a passing (cached)
self-check.
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

from .data.datasets import build_dataset, parse_aspect
from ..inference import ops
from ..inference import int8_check
from ..inference.int8 import META_KEY, RECORD_KEY, TOLERANCE, graph_sha256, int8_path, sha256_file
from ..inference.runners import fp32_onnx
from ..inference.segmenter import CPU_BACKEND_ORDER, Segmenter, _installed, parse_size
from ..models import CheckpointError, load_model
from ..paths import data_root, resolve_checkpoint
from .training.evaluate import evaluate_segmenter

log = logging.getLogger(__name__)

METHODS = ("minmax", "percentile", "entropy")
Size = Tuple[int, int]


# ----------------------------------------------------------------------------- calibration


def calibration_inputs(meta: Mapping[str, Any], size: Size, dataset: str, root: Union[str, Path],
                       split: str = "train", frames: int = 64,
                       crop_aspect: Optional[float] = None) -> Tuple[List[np.ndarray], List[str]]:
    """Network inputs (1, 3, h, w) float32 for ``frames`` evenly spaced frames of ``split``.

    Preprocessed from the full-resolution frame by :func:`pspnet_ros.inference.ops.preprocess_np`, the CPU path
    the node runs INT8 with. Returns the inputs and the frames' stems (recorded in the INT8 file).
    """
    ds = build_dataset(dataset, Path(root), split, crop_aspect=crop_aspect)
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
                  per_channel: bool = True, reduce_range: bool = True, activations: str = "uint8") -> bytes:
    """Quantize an fp32 ONNX graph to static INT8 QDQ, calibrated on ``inputs``.

    ``reduce_range``: 7-bit weights ([-64, 64]). x86 CPUs without VNNI (AVX2, AVX-512 before
    Cascade Lake) multiply uint8 activations by int8 weights with ``vpmaddubsw``, which adds two
    products in int16 and saturates: 2 * 255 * 127 overflows, 2 * 255 * 64 does not. ONNX
    Runtime's quantization guide names reduce_range as the fix; OpenVINO's CPU plugin uses the
    same instruction there. ``activations``: ``uint8`` (asymmetric) or ``int8`` (symmetric).
    """
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
        signed = activations == "int8"
        quantize_static(str(pre), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                        reduce_range=reduce_range,
                        activation_type=QuantType.QInt8 if signed else QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=calib,
                        extra_options={"CalibTensorRangeSymmetric": signed, "ActivationSymmetric": signed})
        return dst.read_bytes()


def write_int8(data: bytes, out: Union[str, Path], meta: Mapping[str, Any], record: Mapping[str, Any]) -> None:
    """Save the INT8 graph with the model metadata and the quantization record."""
    import onnx

    proto = onnx.load_from_string(data)
    del proto.metadata_props[:]
    # the graph's SHA-256, read off the serialized bytes as the runtime reads it
    record = {**record, "graph_sha256": graph_sha256(proto.SerializeToString())}
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


def int8_backends() -> Tuple[str, ...]:
    """Return the installed CPU runtimes that run INT8, in the order ``backend: auto`` tries them."""
    return tuple(b for b in CPU_BACKEND_ORDER["int8"] if _installed(b))


def check_accuracy(checkpoint: Path, int8_file: Path, dataset: str, root: Union[str, Path], split: str,
                   size: Size, threads: Optional[int] = None,
                   backends: Optional[Sequence[str]] = None,
                   crop_aspect: Optional[float] = None) -> Dict[str, Any]:
    """Evaluate the node path in fp32 and in INT8 on each INT8 backend on ``split``; return the record.

    The backends are those ``backend: auto`` may pick (OpenVINO first); the check holds when it
    holds on every one. It also names the CPU it ran on (INT8 accuracy depends on it, see
    :mod:`pspnet_ros.inference.int8_check`) and measures the self-check's reference: the label
    agreement and logit error of INT8 against fp32 on the bundled sample frames, per backend.
    """
    backends = tuple(backends or int8_backends())
    ds = build_dataset(dataset, Path(root), split, crop_aspect=crop_aspect)
    kitti = dataset == "kitti_road"
    keys = ("miou", "maxf") if kitti else ("miou",)
    res: Dict[str, Dict[str, float]] = {}
    reference: Dict[str, Dict[str, float]] = {}
    fp32_seg = None
    for name, precision, backend in [("fp32", "fp32", "onnxruntime")] + [(b, "int8", b) for b in backends]:
        seg = Segmenter.from_checkpoint(str(checkpoint), device="cpu", precision=precision, backend=backend,
                                        inference_size=size, num_threads=threads, int8_model=int8_file)
        t0 = time.perf_counter()
        m = evaluate_segmenter(seg, ds, kitti=kitti)
        res[name] = {k: round(100.0 * float(m[k]), 2) for k in keys}
        log.info("%s %s %s: %s (%.0f s)", split, precision, backend, res[name], time.perf_counter() - t0)
        if precision == "fp32":
            fp32_seg = seg
        else:
            inputs = int8_check.sample_inputs(seg.meta["mean"], seg.meta["std"], size)
            agree, error = int8_check.compare(lambda x: fp32_seg.runner(torch_from(x)).numpy(),
                                              lambda x: seg.runner(torch_from(x)).numpy(), inputs)
            reference[backend] = {"frames": len(inputs), "agreement": round(agree, 5), "logit_error": round(error, 5)}
    per_backend: Dict[str, Dict[str, Any]] = {}
    for b in backends:
        delta = {k: round(res["fp32"][k] - res[b][k], 2) for k in keys}
        per_backend[b] = {"int8": res[b], "loss": delta, "holds": all(delta[k] <= TOLERANCE[k] for k in keys),
                          "self_check": reference[b]}
    holds = all(v["holds"] for v in per_backend.values())
    cpu = int8_check.cpu_record()
    names = {"openvino": "OpenVINO", "onnxruntime": "ONNX Runtime"}
    summary = "; ".join(names.get(b, b) + ": " + ", ".join(
        f"{k} {v['int8'][k]:.2f} vs fp32 {res['fp32'][k]:.2f} ({-v['loss'][k]:+.2f}, allowed -{TOLERANCE[k]:.1f})"
        for k in keys) for b, v in per_backend.items())
    first = per_backend[backends[0]]
    return {"split": split, "frames": len(ds), "fp32": res["fp32"], "int8": first["int8"], "loss": first["loss"],
            "backends": per_backend, "cpu": cpu, "tolerance": {k: TOLERANCE[k] for k in keys}, "holds": holds,
            "summary": f"{dataset} {split} ({len(ds)} frames, {cpu['int8_isa']} CPU): {summary}"}


def torch_from(x: np.ndarray):
    import torch

    return torch.from_numpy(x)


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
    p.add_argument("--crop-aspect", default=None, metavar="W:H",
                   help="centre-crop calibration and check frames to this aspect (e.g. 16:9 with --size 256x448: "
                        "the INT8 model of a 16:9 camera, from pictures of another shape)")
    p.add_argument("--calib-split", default="train", help="split the calibration frames come from")
    p.add_argument("--calib-frames", type=int, default=64, help="calibration frames (evenly spaced)")
    p.add_argument("--method", default="minmax", choices=METHODS, help="activation range calibration")
    p.add_argument("--per-tensor", action="store_true", help="per-tensor weight scales (default per channel)")
    p.add_argument("--full-range", action="store_true",
                   help="8-bit weights ([-127, 127]); the default 7-bit weights (reduce_range) avoid the int16 "
                        "saturation of x86 CPUs without VNNI (AVX2), where full-range models lose accuracy")
    p.add_argument("--activations", default="uint8", choices=("uint8", "int8"),
                   help="activation type: uint8 asymmetric or int8 symmetric")
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
        crop = parse_aspect(args.crop_aspect) if args.crop_aspect else None
    except (OSError, CheckpointError, ValueError) as exc:
        print(f"pspnet quantize: {exc}", file=sys.stderr)
        return 2
    dataset = args.dataset or meta.get("dataset") or "kitti_road"
    root = data_root(args.root)
    own = meta.get("input_size") and [int(v) for v in meta["input_size"]] == list(size)
    out = Path(args.out) if args.out else int8_path(ckpt, None if own else size)
    t0 = time.perf_counter()
    try:
        inputs, stems = calibration_inputs(meta, size, dataset, root, args.calib_split, args.calib_frames,
                                           crop_aspect=crop)
    except (OSError, ValueError) as exc:
        print(f"pspnet quantize: calibration frames: {exc}", file=sys.stderr)
        return 2
    data = quantize_onnx(fp32_onnx(model, size), inputs, method=args.method, per_channel=not args.per_tensor,
                         reduce_range=not args.full_range, activations=args.activations)
    import onnx

    record: Dict[str, Any] = {
        "checkpoint": Path(ckpt).name, "checkpoint_sha256": sha256_file(ckpt), "input_size": list(size),
        "format": "QDQ", "weights": ("int8 symmetric, " + ("8-bit" if args.full_range else "7-bit (reduce_range)")
                                     + ", " + ("per-tensor" if args.per_tensor else "per-channel")),
        "activations": "int8 symmetric" if args.activations == "int8" else "uint8 asymmetric", "calibration": {
            "dataset": dataset, "split": args.calib_split, "frames": len(stems), "method": args.method,
            "stems": stems, "crop_aspect": args.crop_aspect},
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
        acc = check_accuracy(Path(ckpt), out, dataset, root, args.check_split, size, args.threads,
                             crop_aspect=crop)
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
