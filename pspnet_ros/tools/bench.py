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
import shlex
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ..inference.int8_check import cpu_model

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
                   help="inference size HxW (default: auto, each frame's aspect ratio at the checkpoint's "
                        "pixel budget, as the node runs; 375x1242 for --arch)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--precision", default=None,
                   help="engine precision: auto, fp32, fp16, bf16, int8, or a comma list (default: bf16 on "
                        "CUDA; auto on CPU = int8 when the model's accuracy-checked INT8 file exists)")
    p.add_argument("--backend", default="auto",
                   help="auto, torch, onnxruntime, openvino, or a comma list")
    p.add_argument("--compare", action="store_true",
                   help="every installed backend x precision (CPU: torch, onnxruntime, openvino x fp32, "
                        "int8; CUDA: torch x fp32, bf16, fp16), first the auto choice, same frames, one run")
    p.add_argument("--frames", type=int, default=None, help="frames per throughput run (default: 300 CUDA, 60 CPU)")
    p.add_argument("--naive-frames", type=int, default=None, help="frames for the naive run (default: --frames)")
    p.add_argument("--latency-frames", type=int, default=None,
                   help="closed-loop latency frames (default: 100 CUDA, 20 CPU)")
    p.add_argument("--input", default=None, help="folder of images (default: KITTI road val frames from the data root)")
    p.add_argument("--data-root", default=None, help="dataset root (default: ../shared/data)")
    p.add_argument("--frame-size", default="375x1242",
                   help="resize frames to HxW once before timing ('native' keeps them); a comma list "
                        "measures each (e.g. 375x1242,480x640,720x1280,1080x1920: one table row per "
                        "frame size and engine, each with its own naive run)")
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

    from .data.classes import dataset_meta
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
    return cpu_model()


def percentiles(values: List[float]) -> Dict[str, Optional[float]]:
    if not values:
        return {"p50": None, "p95": None, "p99": None}
    a = np.asarray(values)
    return {f"p{q}": round(float(np.percentile(a, q)), 3) for q in (50, 95, 99)}


def run(naive, segs, cfg, frames: List[np.ndarray], n: int, naive_n: int, sources: int,
        latency_n: int, rounds: int, sync) -> Dict[str, Any]:
    """Measure the throughput of the naive baseline and of each engine, then closed-loop latency.

    ``segs``: one Segmenter per engine configuration. The throughput runs are interleaved in
    ``rounds`` (naive, then every engine, per round) so a change in machine load (shared CPUs)
    hits all alike. Returns ``{"naive_fps", "naive_times", "engines": [per-engine dict]}``.
    """
    from ..inference import RealtimeEngine

    class Run:
        def __init__(self, seg) -> None:
            self.errors: List[Any] = []
            self.done = threading.Event()
            self.last: Dict[str, Any] = {}
            self.engine = RealtimeEngine(seg, cfg, on_result=self.on_result, on_error=self.errors.append)
            self.seconds, self.submitted = 0.0, 0

        def on_result(self, r) -> None:
            self.last["r"] = r
            self.done.set()

    runs: List[Run] = []
    naive_s, naive_times = 0.0, []
    try:
        for seg in segs:
            r = Run(seg)
            runs.append(r)
            t0 = time.perf_counter()
            r.engine.start()
            r.warmup_s = time.perf_counter() - t0
            for i in range(2 * cfg.max_batch * max(1, sources)):  # warm the pipeline buffers
                r.engine.submit(frames[i % len(frames)], i, source_id=f"cam{i % sources}")
            r.engine.flush()
        if naive is not None:
            for f in frames[:3]:  # warm-up (allocator, cuDNN)
                naive(f)
            sync()
        i_naive = 0
        for rnd in range(rounds):
            if naive is not None:
                todo = naive_n * (rnd + 1) // rounds - i_naive
                t_start = time.perf_counter()
                for _ in range(todo):
                    t1 = time.perf_counter()
                    naive(frames[i_naive % len(frames)])
                    naive_times.append((time.perf_counter() - t1) * 1000.0)
                    i_naive += 1
                naive_s += time.perf_counter() - t_start
            for r in runs:
                todo = n * (rnd + 1) // rounds - r.submitted
                t_start = time.perf_counter()
                for _ in range(todo):
                    i = r.submitted
                    r.engine.submit(frames[i % len(frames)], i, source_id=f"cam{i % sources}")
                    r.submitted += 1
                r.engine.flush()
                r.seconds += time.perf_counter() - t_start
        results = []
        for r in runs:
            loaded = r.engine.stats()
            latencies, stages = [], []
            for i in range(latency_n):
                r.done.clear()
                r.engine.submit(frames[i % len(frames)], i, source_id="cam0")
                if not r.done.wait(60.0):
                    raise RuntimeError("engine produced no result within 60 s")
                latencies.append(r.last["r"].latency_ms)
                stages.append(r.last["r"].timings)
            r.engine.stop(timeout=10.0)
            if r.errors:
                raise RuntimeError(f"{len(r.errors)} frame(s) failed in the engine, first: {r.errors[0].message}")
            keys = [k for k in stages[0] if k != "queue"] if stages else []
            results.append({"fps": n / r.seconds, "latency": percentiles(latencies),
                            "stages": {k: round(float(np.mean([s.get(k, 0.0) for s in stages])), 3) for k in keys},
                            "loaded_latency": loaded["latency_ms"], "batch_mean": loaded["batch_mean"],
                            "warmup_s": round(r.warmup_s, 2)})
    finally:
        for r in runs:
            r.engine.stop(timeout=10.0)
    return {"naive_fps": naive_n / naive_s if naive is not None else None, "naive_times": naive_times,
            "engines": results}


def configurations(args, cuda: bool) -> List[Tuple[str, str]]:
    """(backend, precision) pairs to measure, the auto choice first with ``--compare``."""
    from ..inference.segmenter import BACKENDS, PRECISIONS, _installed

    if args.compare:
        backends = ("torch",) if cuda else tuple(b for b in ("onnxruntime", "openvino", "torch") if _installed(b))
        precisions = ("fp32", "bf16", "fp16") if cuda else ("fp32", "int8")
        pairs = [("auto", args.precision or ("bf16" if cuda else "auto"))]
        pairs += [(b, p) for p in precisions for b in backends if not (b == "torch" and p == "int8")]
        return pairs
    backends = [b.strip() for b in str(args.backend).split(",") if b.strip()]
    precisions = [p.strip() for p in str(args.precision or ("bf16" if cuda else "auto")).split(",") if p.strip()]
    for b in backends:
        if b not in BACKENDS:
            raise ValueError(f"--backend: {b!r} is not one of {', '.join(BACKENDS)}")
    for q in precisions:
        if q not in PRECISIONS:
            raise ValueError(f"--precision: {q!r} is not one of {', '.join(PRECISIONS)}")
    return [(b, q) for q in precisions for b in backends]


def main(argv: Optional[List[str]] = None) -> int:
    args = get_args_parser().parse_args(argv)
    import torch

    from ..models import CheckpointError, load_model
    from ..paths import ModelNotFoundError, resolve_checkpoint, resolve_device
    from ..inference.segmenter import parse_size

    try:
        device = resolve_device(args.device)
    except (RuntimeError, ValueError) as exc:
        print(f"pspnet bench: {exc}", file=sys.stderr)
        return 2
    cuda = device.startswith("cuda")
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
            size = parse_size(args.size, "--size") if args.size else None  # None: auto
            name = Path(ckpt).stem
        pairs = configurations(args, cuda)
        frame_sizes = [None if f.strip() == "native" else parse_size(f.strip(), "--frame-size")
                       for f in str(args.frame_size).split(",") if f.strip()]
        frame_sets = [load_frames(args, fsz) for fsz in frame_sizes]
    except (OSError, CheckpointError, ValueError) as exc:
        print(f"pspnet bench: {exc}", file=sys.stderr)
        return 2
    results = []
    for frames, source in frame_sets:
        rc, result = _bench_frames(args, argv, model, meta, name, size, device, cuda, pairs, frames, source,
                                   None if args.arch else ckpt)
        if rc:
            return rc
        results.append(result)
    result = dict(results[0])
    if len(results) > 1:
        result["by_frame_size"] = results
        print("\nsummary (engine fps, x naive of the same frame size, same run):")
        print(f"{'frame':>10}  {'inference':>10}  {'engine':<24}  {'fps':>7}  {'x naive':>7}  {'naive fps':>9}")
        for r in results:
            fs = "x".join(map(str, r["frame_size"][::-1])) if r["frame_size"] else "mixed"
            for row in r["table"]:
                ratio_s = f"{row['ratio']:>7.2f}" if row["ratio"] else f"{'-':>7}"
                naive_s = f"{r['naive_fps']:>9.1f}" if r["naive_fps"] else f"{'-':>9}"
                print(f"{fs:>10}  {row['inference_size']:>10}  {row['backend'] + ' ' + row['precision']:<24}  "
                      f"{row['engine_fps']:>7.1f}  {ratio_s}  {naive_s}")
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {path}")
    return 0


def _bench_frames(args, argv, model, meta, name, size, device, cuda, pairs, frames, source, ckpt):
    """Measure naive and every engine configuration on ``frames``; print the table, return (rc, result)."""
    import torch

    from ..inference import EngineConfig, Segmenter
    from .naive import NaiveSegmenter

    n = args.frames or (300 if cuda else 60)
    naive_n = args.naive_frames or n
    latency_n = args.latency_frames or (100 if cuda else 20)
    sync = (lambda: torch.cuda.synchronize(torch.device(device))) if cuda else (lambda: None)
    shapes = sorted({f.shape[:2] for f in frames})
    fs = "x".join(map(str, shapes[0])) if len(shapes) == 1 else f"{len(shapes)} sizes"
    segs, seen, skipped = [], set(), []
    for backend, precision in pairs:
        try:
            seg = Segmenter(model, meta, device=device, precision=precision, inference_size=size,
                            backend=backend, num_threads=args.threads, name=name,
                            checkpoint_path=ckpt, max_batch=args.max_batch)
            # Build (and resolve the precision of) the size these frames run at, outside the timing.
            seg.predict(frames[0])
        except (ValueError, RuntimeError, ImportError) as exc:
            if len(pairs) == 1:
                print(f"pspnet bench: {exc}", file=sys.stderr)
                return 2, {}
            skipped.append(f"{backend} {precision}: {str(exc).splitlines()[0]}")
            continue
        ran = seg.sizes()["x".join(map(str, seg.size_for(shapes[0])))]
        key = (ran["backend"], ran["precision"])
        if key in seen:  # e.g. the auto choice again
            continue
        seen.add(key)
        segs.append(seg)
    if not segs:
        print("pspnet bench: no configuration could be built:\n  " + "\n  ".join(skipped), file=sys.stderr)
        return 2, {}
    inf = segs[0].size_for(shapes[0])
    print(f"pspnet bench: {name} on {device} ({device_name(device)}, {torch.get_num_threads()} CPU threads), "
          f"inference {'auto ' if segs[0].auto_size else ''}{inf[0]}x{inf[1]}, frames {fs} ({source})",
          flush=True)
    naive = None if args.skip_naive else NaiveSegmenter(model, meta, inf, device)
    cfg = EngineConfig(drop_policy="queue", queue_size=max(8, 2 * args.max_batch), max_batch=args.max_batch,
                       upsample=args.upsample, compile=args.compile, cuda_graphs=args.cuda_graphs)
    res = run(naive, segs, cfg, frames, n, naive_n, max(1, args.sources), latency_n, max(1, args.rounds), sync)
    naive_fps, naive_times = res["naive_fps"], res["naive_times"]
    rows = []
    for seg, eng in zip(segs, res["engines"]):
        ratio = eng["fps"] / naive_fps if naive_fps else None
        ran = seg.sizes()["x".join(map(str, seg.size_for(shapes[0])))]
        rows.append({"backend": ran["backend"], "precision": ran["precision"], "engine_fps": round(eng["fps"], 2),
                     "inference_size": "x".join(map(str, seg.size_for(shapes[0]))),
                     "ratio": round(ratio, 3) if ratio else None, "latency_ms": eng["latency"],
                     "stages_ms": eng["stages"], "loaded_latency_ms": eng["loaded_latency"],
                     "batch_mean": eng["batch_mean"], "warmup_s": eng["warmup_s"],
                     "precision_note": ran["note"]})

    label = lambda r: f"engine {r['backend']} {r['precision']}"  # noqa: E731
    label_n = "naive (eager fp32, numpy/cv2)"
    width = max([len(label_n)] + [len(label(r)) for r in rows])
    fmt = lambda v: f"{v:>8.1f}" if v is not None else f"{'-':>8}"  # noqa: E731
    print(f"engine: batch<={args.max_batch}, {args.sources} source(s), queue policy; latency closed loop")
    print(f"{'':<{width}}  {'frames':>6}  {'fps':>8}  {'x naive':>8}  {'p50 ms':>8}  {'p95 ms':>8}  {'p99 ms':>8}")
    if naive_fps:
        q = percentiles(naive_times)
        print(f"{label_n:<{width}}  {naive_n:>6}  {naive_fps:>8.1f}  {1.0:>8.2f}  "
              f"{fmt(q['p50'])}  {fmt(q['p95'])}  {fmt(q['p99'])}")
    for r in rows:
        q = r["latency_ms"]
        ratio_s = f"{r['ratio']:>8.2f}" if r["ratio"] else f"{'-':>8}"
        print(f"{label(r):<{width}}  {n:>6}  {r['engine_fps']:>8.1f}  {ratio_s}  {fmt(q['p50'])}  "
              f"{fmt(q['p95'])}  {fmt(q['p99'])}")
    for why in skipped:
        print(f"not measured: {why}")
    top = rows[0]
    if top["ratio"] is not None:
        print(f"ratio engine/naive: {top['ratio']:.2f}x ({label(top)})")
    print(f"{label(top)} stages, ms per batch (closed loop): "
          + " | ".join(f"{k} {v:.2f}" for k, v in top["stages_ms"].items()))

    result = {
        "device": device, "device_name": device_name(device), "model": name,
        "input_size": list(inf), "inference_size": "auto" if segs[0].auto_size else list(inf),
        "frame_size": list(shapes[0]) if len(shapes) == 1 else None,
        "engine_fps": top["engine_fps"], "naive_fps": round(naive_fps, 2) if naive_fps else None,
        "ratio": top["ratio"], "latency_ms": top["latency_ms"],
        "stages_ms": top["stages_ms"], "naive_latency_ms": percentiles(naive_times),
        "loaded_latency_ms": top["loaded_latency_ms"], "batch_mean": top["batch_mean"],
        "precision": top["precision"], "backend": top["backend"], "table": rows, "not_measured": skipped,
        "frames": n, "naive_frames": naive_n,
        "latency_frames": latency_n, "rounds": args.rounds, "sources": args.sources, "max_batch": args.max_batch,
        "upsample": args.upsample, "compile": args.compile, "cuda_graphs": args.cuda_graphs,
        "cpu_threads": torch.get_num_threads(), "torch": torch.__version__, "versions": _versions(),
        "input": source, "warmup_s": top["warmup_s"],
        "command": "pspnet bench " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host_load": _load(),
    }
    return 0, result


def _versions() -> Dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("onnxruntime", "openvino", "torch"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def _load() -> Optional[List[float]]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


if __name__ == "__main__":
    sys.exit(main())
