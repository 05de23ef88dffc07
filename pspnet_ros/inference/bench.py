"""``pspnet bench``: the engine against a naive baseline, same model, same real frames, one run.

naive: what a first-attempt node does - one frame at a time, synchronous, eager FP32 PyTorch,
numpy/OpenCV resize/normalize/argmax/palette/blend (see :mod:`.naive`).
engine: :class:`RealtimeEngine` with the ``queue`` policy (nothing dropped), the configured
backend/precision, GPU pre/post-processing and the CUDA stream pipeline on CUDA.

Both produce labels, color, overlay and drivable at the frame size. Throughput is frames /
wall time for ``--frames`` frames, the two alternating in ``--rounds`` chunks so a change of
machine load affects both; latency is measured closed-loop (one frame in flight, as a camera
slower than the engine sees it). Prints a table and writes JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shlex
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

log = logging.getLogger(__name__)

ARCHS = ("mobilenetv3_large", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2",
         "resnet18", "resnet50")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pspnet bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", default="auto",
                   help="checkpoint, or 'auto' for the shipped KITTI road model of the device")
    p.add_argument("--arch", choices=ARCHS, default=None,
                   help="benchmark an untrained PSPNet with this backbone instead of a checkpoint")
    p.add_argument("--head-channels", type=int, default=None,
                   help="--arch: PSP head width (default 128 for the light backbones, 512 for ResNets)")
    p.add_argument("--size", default=None,
                   help="inference size HxW (default: the checkpoint's; 375x1242 for --arch)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--precision", default=None, choices=("fp32", "fp16", "bf16"),
                   help="engine precision (default: bf16 on CUDA, fp32 on CPU)")
    p.add_argument("--backend", default="auto", choices=("auto", "torch", "onnxruntime"))
    p.add_argument("--frames", type=int, default=None, help="frames per throughput run (default: 300 CUDA, 60 CPU)")
    p.add_argument("--naive-frames", type=int, default=None, help="frames for the naive run (default: --frames)")
    p.add_argument("--latency-frames", type=int, default=None,
                   help="closed-loop latency frames (default: 100 CUDA, 20 CPU)")
    p.add_argument("--input", default=None, help="folder of images (default: KITTI road val frames from the data root)")
    p.add_argument("--data-root", default=None, help="dataset root (default: ../shared/data)")
    p.add_argument("--frame-size", default="375x1242",
                   help="resize frames to HxW once before timing ('native' keeps them)")
    p.add_argument("--sources", type=int, default=1, help="cameras to spread the frames over")
    p.add_argument("--max-batch", type=int, default=4)
    p.add_argument("--upsample", default="logits", choices=("logits", "labels"))
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--cuda-graphs", action="store_true", help="capture CUDA graphs")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    p.add_argument("--skip-naive", action="store_true", help="engine only (ratio omitted)")
    p.add_argument("--rounds", type=int, default=3,
                   help="alternate naive and engine this many times (fair under changing load)")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def build_untrained(arch: str, size: Tuple[int, int], head_channels: Optional[int]):
    """Build an untrained PSPNet with real kitti_road metadata (benchmarks before models ship)."""
    import torch

    from ..data.classes import dataset_meta
    from ..models import build_pspnet

    torch.manual_seed(0)
    meta = dataset_meta("kitti_road")
    from ..models.backbones import backbone_normalization

    light = not arch.startswith("resnet")
    kwargs = {"num_classes": len(meta["classes"]), "backbone": arch, "output_stride": 16 if light else 8,
                  "head_channels": head_channels or (128 if light else 512), "aux": False}
    if arch.startswith("efficientnet"):
        kwargs.update(skip=True, skip_channels=96)  # as the shipped Lite models
    mean, std = backbone_normalization(arch)
    meta.update(mean=list(mean), std=list(std))
    model = build_pspnet(**kwargs).eval()
    meta.update(arch="pspnet", arch_kwargs=kwargs, input_size=list(size), metrics={},
                name=f"pspnet_{arch}_untrained")
    return model, meta


def load_frames(args, frame_size: Optional[Tuple[int, int]]) -> Tuple[List[np.ndarray], str]:
    import cv2

    from ..paths import data_root

    if args.input:
        folder = Path(args.input)
        files = sorted(f for f in folder.iterdir() if f.suffix.lower() in (".jpg", ".jpeg", ".png"))
        source = f"{len(files)} images from {folder}"
    else:
        root = data_root(args.data_root) / "kitti_road"
        stems = (root / "val.txt").read_text().split()
        files = [root / "image_2" / f"{s}.jpg" for s in stems]
        files = [f if f.exists() else f.with_suffix(".png") for f in files]
        source = f"{len(files)} KITTI road val frames"
    frames = []
    for f in files:
        img = cv2.imread(str(f), cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError(f"{f}: cannot read image")
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        if frame_size is not None and img.shape[:2] != tuple(frame_size):
            img = cv2.resize(img, (frame_size[1], frame_size[0]), interpolation=cv2.INTER_LINEAR)
        frames.append(np.ascontiguousarray(img))
    if not frames:
        raise ValueError(f"no images found ({source})")
    return frames, source


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def percentiles(values: List[float]) -> Dict[str, Optional[float]]:
    if not values:
        return {"p50": None, "p95": None, "p99": None}
    a = np.asarray(values)
    return {f"p{q}": round(float(np.percentile(a, q)), 3) for q in (50, 95, 99)}


def run(naive, seg, cfg, frames: List[np.ndarray], n: int, naive_n: int, sources: int,
        latency_n: int, rounds: int, sync) -> Dict[str, Any]:
    """Measure the throughput of the naive baseline and the engine, then closed-loop engine latency.

    The throughput runs are interleaved in ``rounds`` so a change in machine load (shared CPUs) hits
    both alike.
    """
    from . import RealtimeEngine

    errors: List[Any] = []
    done = threading.Event()
    last: Dict[str, Any] = {}

    def on_result(r) -> None:
        last["r"] = r
        done.set()

    engine = RealtimeEngine(seg, cfg, on_result=on_result, on_error=errors.append)
    t0 = time.perf_counter()
    engine.start()
    warmup_s = time.perf_counter() - t0
    naive_s, engine_s, naive_times = 0.0, 0.0, []
    try:
        for i in range(2 * cfg.max_batch * max(1, sources)):  # warm the pipeline buffers
            engine.submit(frames[i % len(frames)], i, source_id=f"cam{i % sources}")
        engine.flush()
        if naive is not None:
            for f in frames[:3]:  # warm-up (allocator, cuDNN)
                naive(f)
            sync()
        i_naive = i_engine = 0
        for r in range(rounds):
            if naive is not None:
                todo = naive_n * (r + 1) // rounds - i_naive
                t_start = time.perf_counter()
                for _ in range(todo):
                    t1 = time.perf_counter()
                    naive(frames[i_naive % len(frames)])
                    naive_times.append((time.perf_counter() - t1) * 1000.0)
                    i_naive += 1
                naive_s += time.perf_counter() - t_start
            todo = n * (r + 1) // rounds - i_engine
            t_start = time.perf_counter()
            for _ in range(todo):
                engine.submit(frames[i_engine % len(frames)], i_engine, source_id=f"cam{i_engine % sources}")
                i_engine += 1
            engine.flush()
            engine_s += time.perf_counter() - t_start
        loaded = engine.stats()
        latencies, stages = [], []
        for i in range(latency_n):
            done.clear()
            engine.submit(frames[i % len(frames)], i, source_id="cam0")
            if not done.wait(60.0):
                raise RuntimeError("engine produced no result within 60 s")
            latencies.append(last["r"].latency_ms)
            stages.append(last["r"].timings)
    finally:
        engine.stop(timeout=10.0)
    if errors:
        raise RuntimeError(f"{len(errors)} frame(s) failed in the engine, first: {errors[0].message}")
    keys = [k for k in stages[0] if k != "queue"] if stages else []
    return {"fps": n / engine_s, "naive_fps": naive_n / naive_s if naive is not None else None,
            "naive_times": naive_times, "latency": percentiles(latencies),
            "stages": {k: round(float(np.mean([s.get(k, 0.0) for s in stages])), 3) for k in keys},
            "loaded_latency": loaded["latency_ms"], "batch_mean": loaded["batch_mean"],
            "warmup_s": round(warmup_s, 2)}


def main(argv: Optional[List[str]] = None) -> int:
    args = get_args_parser().parse_args(argv)
    import torch

    from ..models import CheckpointError, load_model
    from ..paths import ModelNotFoundError, resolve_checkpoint, resolve_device
    from . import EngineConfig, Segmenter
    from .naive import NaiveSegmenter
    from .segmenter import parse_size

    try:
        device = resolve_device(args.device)
    except (RuntimeError, ValueError) as exc:
        print(f"pspnet bench: {exc}", file=sys.stderr)
        return 2
    cuda = device.startswith("cuda")
    precision = args.precision or ("bf16" if cuda else "fp32")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        if args.arch:
            size = parse_size(args.size or "375x1242", "--size")
            model, meta = build_untrained(args.arch, size, args.head_channels)
            name = meta["name"]
        else:
            try:
                ckpt = resolve_checkpoint(args.checkpoint, "kitti_road", device)
            except ModelNotFoundError as exc:
                print(f"pspnet bench: {exc}\nNo shipped model yet: benchmark an untrained architecture "
                      "instead, e.g. --arch mobilenetv3_large --size 188x621 (CPU) or "
                      "--arch resnet50 --size 375x1242 (GPU).", file=sys.stderr)
                return 2
            model, meta = load_model(ckpt, "cpu")
            size = parse_size(args.size or meta.get("input_size") or "", "--size")
            name = Path(ckpt).stem
        frame_size = None if args.frame_size == "native" else parse_size(args.frame_size, "--frame-size")
        frames, source = load_frames(args, frame_size)
    except (OSError, CheckpointError, ValueError) as exc:
        print(f"pspnet bench: {exc}", file=sys.stderr)
        return 2

    n = args.frames or (300 if cuda else 60)
    naive_n = args.naive_frames or n
    latency_n = args.latency_frames or (100 if cuda else 20)
    sync = (lambda: torch.cuda.synchronize(torch.device(device))) if cuda else (lambda: None)
    shapes = sorted({f.shape[:2] for f in frames})
    fs = "x".join(map(str, shapes[0])) if len(shapes) == 1 else f"{len(shapes)} sizes"
    print(f"pspnet bench: {name} on {device} ({device_name(device)}, {torch.get_num_threads()} CPU threads), "
          f"inference {size[0]}x{size[1]}, frames {fs} ({source})", flush=True)

    naive = None if args.skip_naive else NaiveSegmenter(model, meta, size, device)
    seg = Segmenter(model, meta, device=device, precision=precision, inference_size=size,
                    backend=args.backend, num_threads=args.threads, name=name)
    cfg = EngineConfig(drop_policy="queue", queue_size=max(8, 2 * args.max_batch), max_batch=args.max_batch,
                       upsample=args.upsample, compile=args.compile, cuda_graphs=args.cuda_graphs)
    eng = run(naive, seg, cfg, frames, n, naive_n, max(1, args.sources), latency_n,
              max(1, args.rounds), sync)
    naive_fps, naive_times = eng["naive_fps"], eng["naive_times"]
    ratio = eng["fps"] / naive_fps if naive_fps else None

    label_e = f"engine ({seg.backend} {precision}, batch<={args.max_batch}, {args.sources} src)"
    label_n = "naive (eager fp32, numpy/cv2)"
    width = max(len(label_e), len(label_n))
    print(f"{'':<{width}}  {'frames':>6}  {'fps':>8}  {'p50 ms':>8}  {'p95 ms':>8}  {'p99 ms':>8}")
    if naive_fps:
        q = percentiles(naive_times)
        print(f"{label_n:<{width}}  {naive_n:>6}  {naive_fps:>8.1f}  "
              f"{q['p50']:>8.1f}  {q['p95']:>8.1f}  {q['p99']:>8.1f}")
    q = eng["latency"]
    fmt = lambda v: f"{v:>8.1f}" if v is not None else f"{'-':>8}"  # noqa: E731
    print(f"{label_e:<{width}}  {n:>6}  {eng['fps']:>8.1f}  {fmt(q['p50'])}  {fmt(q['p95'])}  {fmt(q['p99'])}")
    if ratio is not None:
        print(f"ratio engine/naive: {ratio:.2f}x")
    print("engine stages, ms per batch (closed loop): "
          + " | ".join(f"{k} {v:.2f}" for k, v in eng["stages"].items()))

    result = {
        "device": device, "device_name": device_name(device), "model": name,
        "input_size": list(size), "frame_size": list(shapes[0]) if len(shapes) == 1 else None,
        "engine_fps": round(eng["fps"], 2), "naive_fps": round(naive_fps, 2) if naive_fps else None,
        "ratio": round(ratio, 3) if ratio else None, "latency_ms": eng["latency"],
        "stages_ms": eng["stages"], "naive_latency_ms": percentiles(naive_times),
        "loaded_latency_ms": eng["loaded_latency"], "batch_mean": eng["batch_mean"],
        "precision": precision, "backend": seg.backend, "frames": n, "naive_frames": naive_n,
        "latency_frames": latency_n, "rounds": args.rounds, "sources": args.sources, "max_batch": args.max_batch,
        "upsample": args.upsample, "compile": args.compile, "cuda_graphs": args.cuda_graphs,
        "cpu_threads": torch.get_num_threads(), "torch": torch.__version__,
        "input": source, "warmup_s": eng["warmup_s"],
        "command": "pspnet bench " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host_load": _load(),
    }
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {path}")
    return 0


def _load() -> Optional[List[float]]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


if __name__ == "__main__":
    sys.exit(main())
