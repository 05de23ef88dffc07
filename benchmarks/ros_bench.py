"""End-to-end benchmark: segmentation_node over DDS versus the same RealtimeEngine in-process.

Real KITTI frames are published at fixed rates into segmentation_node (a separate process, over DDS)
and the same RealtimeEngine is driven in-process, in one run.

    .venv/bin/python benchmarks/ros_bench.py --checkpoint auto --rates 30,200 --duration 10
    .venv/bin/python benchmarks/ros_bench.py --checkpoint random-light --inference-size 188 621

For each input rate it reports frames sent, results, throughput (results/s), dropped frames
and latency percentiles. Latency is publish -> labels received for the node (the stamp is
the publish time; both processes share the system clock) and submit -> on_result for the
engine alone; the difference is what ROS adds (message conversion, DDS transport both ways,
executor). ``random-light`` builds the shipped CPU architecture (MobileNetV3-Large PSPNet,
head 128, 188x621) with random weights: speed does not depend on the weights.
Only the labels output is subscribed/computed, as a planner consuming labels would.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="auto",
                   help="checkpoint .pt, 'auto' (shipped model for the device) or 'random-light'")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.add_argument("--precision", default="auto", help="auto, fp32, fp16, bf16, int8 (auto: int8 on CPU "
                   "when the model has its accuracy-checked .int8.onnx)")
    p.add_argument("--backend", default="auto", help="auto, torch, onnxruntime, openvino")
    p.add_argument("--inference-size", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="network input size (default: the checkpoint's)")
    p.add_argument("--rates", default="30,200", help="comma-separated input rates in Hz")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per rate and path")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds of frames before measuring")
    p.add_argument("--frames", type=int, default=8, help="distinct KITTI val frames to cycle")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for inference in both paths (default: torch's default)")
    p.add_argument("--domain", type=int, default=None, help="ROS_DOMAIN_ID (default: from the pid)")
    p.add_argument("--all-outputs", action="store_true",
                   help="also subscribe to color, overlay and drivable (4 images of the frame size per "
                        "frame; default: labels only, as a planner consuming labels would)")
    p.add_argument("--json", default=None, help="write the rows (with the node's stage table) here")
    return p


def load_frames(n: int) -> List[np.ndarray]:
    from PIL import Image

    from pspnet_ros.paths import data_root

    root = data_root() / "kitti_road"
    stems = (root / "val.txt").read_text().split()[:n]
    # One size for every frame (KITTI varies by a few pixels), as a real camera delivers.
    frames = [np.asarray(Image.open(root / "image_2" / f"{s}.jpg").convert("RGB")) for s in stems]
    h = min(f.shape[0] for f in frames)
    w = min(f.shape[1] for f in frames)
    return [np.ascontiguousarray(f[:h, :w]) for f in frames]


def random_light_checkpoint(path: Path) -> Path:
    import torch

    from pspnet_ros.tools.data.classes import dataset_meta
    from pspnet_ros.models import build_pspnet, save_checkpoint

    torch.manual_seed(0)
    kwargs = {"num_classes": 2, "backbone": "mobilenetv3_large", "output_stride": 16, "head_channels": 128,
                  "aux": False}
    meta = dataset_meta("kitti_road")
    meta.update(arch="pspnet", arch_kwargs=kwargs, input_size=[188, 621], metrics={},
                name="random_mobilenetv3_light")
    return save_checkpoint(path, build_pspnet(**kwargs).eval(), meta)


def percentiles(ms: Sequence[float]) -> Dict[str, Optional[float]]:
    if not ms:
        return {"p50": None, "p95": None, "p99": None}
    a = np.asarray(ms)
    return {k: float(np.percentile(a, q)) for k, q in (("p50", 50), ("p95", 95), ("p99", 99))}


def paced(rate: float, seconds: float):
    """Yield frame indices at `rate` Hz for `seconds` (sleep-paced, no catch-up bursts)."""
    period = 1.0 / rate
    t0 = time.perf_counter()
    i = 0
    while True:
        now = time.perf_counter()
        if now - t0 >= seconds:
            return
        yield i
        i += 1
        target = t0 + i * period
        delay = target - time.perf_counter()
        if delay > 0:
            time.sleep(delay)


class EnginePath:
    """The RealtimeEngine driven in-process: submit -> on_result."""

    def __init__(self, checkpoint: Path, frames, args) -> None:
        from pspnet_ros.inference import Segmenter

        self.frames, self.args = frames, args
        self.seg = Segmenter.from_checkpoint(
            str(checkpoint), device=args.device, precision=args.precision, backend=args.backend,
            inference_size=tuple(args.inference_size) if args.inference_size else None,
            num_threads=args.threads)

    def measure(self, rate: float) -> Dict:
        from pspnet_ros.inference import EngineConfig, RealtimeEngine

        args, frames = self.args, self.frames
        lat: List[float] = []
        measuring = [False]
        lock = threading.Lock()

        def on_result(res):
            if measuring[0]:
                with lock:
                    lat.append((time.perf_counter() - res.stamp) * 1000)

        eng = RealtimeEngine(self.seg, EngineConfig(drop_policy="latest", outputs=frozenset({"labels"})),
                             on_result=on_result).start()
        for i in paced(rate, args.warmup):
            eng.submit(frames[i % len(frames)], time.perf_counter())
        eng.flush(timeout=30)
        before = eng.stats()["dropped"]
        measuring[0] = True
        sent = 0
        t0 = time.perf_counter()
        for i in paced(rate, args.duration):
            eng.submit(frames[i % len(frames)], time.perf_counter())
            sent += 1
        elapsed = time.perf_counter() - t0
        eng.flush(timeout=30)
        measuring[0] = False
        dropped = eng.stats()["dropped"] - before
        eng.stop()
        return dict(path="engine alone", rate=rate, sent=sent, results=len(lat),
                    fps=len(lat) / elapsed, dropped=dropped, **percentiles(lat))


class NodePath:
    """segmentation_node in its own process; this process publishes frames and takes labels."""

    def __init__(self, checkpoint: Path, frames, args) -> None:
        import array

        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        self.args = args
        from pspnet_ros.tools.ros.node_process import NodeProcess, node_env, private_domain, write_params

        domain = args.domain if args.domain is not None else private_domain()
        env = node_env(domain, threads=args.threads)
        self.tmp = Path(tempfile.mkdtemp(prefix="ros_bench_"))
        size = list(args.inference_size) if args.inference_size else [0, 0]
        params = write_params(self.tmp / "params.yaml", {
            "checkpoint": str(checkpoint), "device": args.device, "precision": args.precision,
            "backend": args.backend, "inference_threads": args.threads or 0,
            "inference_size": size, "diagnostics_period": 5.0})
        self.node = NodeProcess(params, self.tmp / "node.log", env, cwd=REPO)
        self.proc = self.node.proc
        os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx, domain_id=domain)
        node = rclpy.create_node("ros_bench", context=self.ctx)
        executor = SingleThreadedExecutor(context=self.ctx)
        executor.add_node(node)

        def spin():
            while self.ctx.ok():
                try:
                    executor.spin_once(timeout_sec=0.05)
                except Exception:  # noqa: BLE001 (the context shut down while spinning)
                    return
        threading.Thread(target=spin, daemon=True).start()
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)  # like camera drivers
        self.pub = node.create_publisher(Image, "/image", reliable)
        self.lat: List[float] = []
        self.measuring = False
        node.create_subscription(Image, "/segmentation/labels", self._on_labels, reliable)
        self.other_counts: Dict[str, int] = {}
        if args.all_outputs:
            for name in ("color", "overlay", "drivable"):
                self.other_counts[name] = 0
                node.create_subscription(Image, f"/segmentation/{name}", self._counter(name), reliable)
        from diagnostic_msgs.msg import DiagnosticArray

        self.diag: Dict[str, str] = {}
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self.msgs = []
        for f in frames:
            m = Image(height=f.shape[0], width=f.shape[1], encoding="rgb8", step=f.shape[1] * 3)
            m.header.frame_id = "camera"
            data = array.array("B")
            data.frombytes(f.tobytes())
            m.data = data
            self.msgs.append(m)

    def _on_labels(self, msg) -> None:
        if self.measuring:
            stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            self.lat.append((time.time_ns() - stamp) / 1e6)

    def _counter(self, name: str):
        def cb(_msg) -> None:
            if self.measuring:
                self.other_counts[name] += 1
        return cb

    def _on_diag(self, msg) -> None:
        for st in msg.status:
            if st.values and self.measuring:
                self.diag = {kv.key: kv.value for kv in st.values}

    def stages(self) -> Dict[str, Optional[float]]:
        """Per-frame ms of the node's stages from its last /diagnostics while measuring."""
        out: Dict[str, Optional[float]] = {}
        for k, v in self.diag.items():
            if (k.startswith("stage ") or k.startswith("node ")) and k.endswith("(ms)"):
                try:
                    out[k[:-5]] = float(v)
                except ValueError:
                    out[k[:-5]] = None
        return out

    def wait_ready(self, timeout: float = 300.0) -> None:
        deadline = time.monotonic() + timeout
        while "serving 1 camera" not in (self.tmp / "node.log").read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("node did not start:\n" + (self.tmp / "node.log").read_text())
            time.sleep(0.2)
        while self.pub.get_subscription_count() == 0:
            time.sleep(0.1)

    def _publish(self, i: int) -> None:
        m = self.msgs[i % len(self.msgs)]
        m.header.stamp.sec, m.header.stamp.nanosec = divmod(time.time_ns(), 1_000_000_000)
        self.pub.publish(m)

    def measure(self, rate: float) -> Dict:
        args = self.args
        self.lat = []
        for i in paced(rate, args.warmup):
            self._publish(i)
        time.sleep(1.0)
        self.diag = {}
        self.other_counts = dict.fromkeys(self.other_counts, 0)
        self.measuring = True
        sent = 0
        t0 = time.perf_counter()
        for i in paced(rate, args.duration):
            self._publish(i)
            sent += 1
        elapsed = time.perf_counter() - t0
        time.sleep(1.0)  # the last frames come back
        self.measuring = False
        lat = list(self.lat)
        return dict(path="node over DDS", rate=rate, sent=sent, results=len(lat), fps=len(lat) / elapsed,
                    dropped=sent - len(lat), stages=self.stages(), other_outputs=dict(self.other_counts),
                    **percentiles(lat))

    def close(self) -> None:
        self.node.stop()
        self.ctx.try_shutdown()


def fmt(v: Optional[float], nd: int = 1) -> str:
    return "n/a" if v is None else f"{v:.{nd}f}"


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_args_parser().parse_args(argv)
    from pspnet_ros.paths import resolve_checkpoint, resolve_device

    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    if args.checkpoint == "random-light":
        checkpoint = random_light_checkpoint(Path(tempfile.mkdtemp(prefix="ros_bench_")) / "random_light.pt")
    else:
        checkpoint = resolve_checkpoint(args.checkpoint, "kitti_road", resolve_device(args.device))
    frames = load_frames(args.frames)
    engine = EnginePath(checkpoint, frames, args)
    node = NodePath(checkpoint, frames, args)
    rows = []
    try:
        node.wait_ready()
        # Interleaved per rate, so both paths see the same background load.
        for rate in rates:
            rows.append(engine.measure(rate))
            rows.append(node.measure(rate))
    finally:
        node.close()
    seg = engine.seg
    engine_rows, node_rows = rows[0::2], rows[1::2]

    h, w = frames[0].shape[:2]
    print(f"\nmodel {seg.model_name} ({seg.backend}, {seg.precision}) on {seg.device}, "
          f"inference {seg.inference_size[0]}x{seg.inference_size[1]}, frames {w}x{h} rgb8, "
          f"outputs: {'labels, color, overlay, drivable' if args.all_outputs else 'labels'} at input size "
          f"(engine alone: labels), {args.duration:g} s per row\n")
    print("| path | input (Hz) | sent | results | throughput (fps) | dropped | p50 (ms) | p95 (ms) | p99 (ms) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['path']} | {row['rate']:g} | {row['sent']} | {row['results']} | {row['fps']:.1f} | "
              f"{row['dropped']} | {fmt(row['p50'])} | {fmt(row['p95'])} | {fmt(row['p99'])} |")
    print()
    for e, n in zip(engine_rows, node_rows):
        ratio = n["fps"] / e["fps"] if e["fps"] else float("nan")
        extra = (n["p50"] - e["p50"]) if n["p50"] is not None and e["p50"] is not None else None
        answered = 100.0 * n["results"] / n["sent"] if n["sent"] else float("nan")
        print(f"at {e['rate']:g} Hz: node answered {answered:.1f} % of frames, node/engine throughput "
              f"{ratio:.2f}, ROS adds {fmt(extra)} ms at p50"
              + "".join(f", {k} {v}" for k, v in n.get("other_outputs", {}).items()))
    names = sorted({k for n in node_rows for k in n["stages"]})
    if names:
        print("\nnode stages (ms per frame, from its /diagnostics while measuring; node receive/publish = "
              "the node's own work outside the engine)")
        print("| input (Hz) | " + " | ".join(names) + " |")
        print("|---:|" + "---:|" * len(names))
        for n in node_rows:
            print(f"| {n['rate']:g} | " + " | ".join(fmt(n["stages"].get(k), 2) for k in names) + " |")
    if args.json:
        import json

        Path(args.json).write_text(json.dumps({
            "model": seg.model_name, "backend": seg.backend, "precision": seg.precision,
            "inference_size": list(seg.inference_size), "frame_size": [h, w], "rows": rows,
            "command": "benchmarks/ros_bench.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
