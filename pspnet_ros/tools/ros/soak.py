"""``pspnet soak``: run segmentation_node for a long time under a 30 Hz camera and watch for leaks.

    pspnet soak --minutes 30                                    # shipped model for the device
    pspnet soak --seconds 60 --checkpoint tiny.pt --inference-size 64x192 --json soak.json

Starts the node as its own process (``python -m pspnet_ros.ros.node --ros-args --params-file``,
localhost only, in a namespace of its own on a ROS domain above the test suite's 1-200, so other
nodes and tests on the machine neither see its frames nor feed it theirs), publishes real KITTI road val
frames from the data root, cycled, at ``--rate`` Hz with a reliable publisher (as camera drivers do), subscribes to
the node's outputs and /diagnostics, and every second samples the node process's resident memory
(``VmRSS`` from /proc/<pid>/status) and GPU memory (from /diagnostics, CUDA only).

The run is cut into windows; each window reports frames sent and answered, end-to-end latency
(publish -> labels received, p50/p95), frames the node dropped (latest frame wins) or failed, RSS
and GPU memory. The first window after ``--warmup`` is compared with the last one: RSS growth
must stay below ``--max-rss-growth`` percent (default 5), frames must flow to the end and the
node must exit cleanly on SIGINT, or the exit code is 1. A table is printed and everything goes
to ``--json``.
"""

from __future__ import annotations

import argparse
import array
import json
import logging
import os
import shlex
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .node_process import NodeProcess, node_env, private_domain, write_params

LOGGER = logging.getLogger(__name__)
OUTPUTS = ("labels", "color", "overlay", "drivable")


class SoakError(RuntimeError):
    pass


# ----------------------------------------------------------------------------- measurements

def read_rss_mb(pid: int) -> Optional[float]:
    """Resident memory of ``pid`` in MiB (VmRSS), None once the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0  # kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def percentile(values: Sequence[float], q: float) -> Optional[float]:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else None


def _num(value: Optional[str]) -> Optional[float]:
    try:
        return float(value) if value not in (None, "", "n/a") else None
    except ValueError:
        return None


@dataclass
class Record:
    """Everything observed during the run, in wall-clock seconds since the start (``t0``)."""

    t0: float = 0.0
    published: Dict[int, float] = field(default_factory=dict)  # stamp ns -> publish time
    answered: Dict[int, float] = field(default_factory=dict)  # stamp ns -> labels receive time
    outputs: Dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTPUTS, 0))
    rss: List[Tuple[float, float]] = field(default_factory=list)  # (t, MiB)
    diag: List[Tuple[float, Dict[str, str]]] = field(default_factory=list)  # (t, values)
    late_publishes: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def summarize_windows(rec: Record, duration: float, window: float) -> List[Dict[str, Any]]:
    """Per-window figures from the record (times relative to the start of publishing)."""
    edges = list(np.arange(0.0, duration, window)) + [duration]
    with rec.lock:
        published = dict(rec.published)
        answered = dict(rec.answered)
        rss = list(rec.rss)
        diag = list(rec.diag)

    def diag_at(t: float) -> Dict[str, str]:
        """Return the last diagnostics values received at or before t (first ones if none yet)."""
        best = diag[0][1] if diag else {}
        for td, values in diag:
            if td > t:
                break
            best = values
        return best

    def total(values: Dict[str, str], key: str) -> int:
        return int(_num(values.get(key)) or 0)

    rows = []
    for a, b in zip(edges[:-1], edges[1:]):
        sent = [s for s, t in published.items() if a <= t < b]
        got = [s for s in sent if s in answered]
        lat = [(answered[s] - published[s]) * 1000.0 for s in got]
        mem = [m for t, m in rss if a <= t < b]
        d0, d1 = diag_at(a), diag_at(b)
        gpu = [_num(v.get("gpu memory (MB)")) for t, v in diag if a <= t < b]
        gpu = [g for g in gpu if g is not None]
        rows.append({
            "t_start_s": round(a, 1), "t_end_s": round(b, 1),
            "sent": len(sent), "answered": len(got),
            "sent_hz": round(len(sent) / (b - a), 2), "answered_hz": round(len(got) / (b - a), 2),
            "unanswered": len(sent) - len(got),
            # frames the node's subscription took: the rest were replaced in its keep-last DDS
            # queue before it got to them (newest frame wins there too)
            "node_received": total(d1, "received (total)") - total(d0, "received (total)"),
            "node_dropped": total(d1, "dropped (total)") - total(d0, "dropped (total)"),
            "node_failed": total(d1, "failed (total)") - total(d0, "failed (total)"),
            "latency_p50_ms": percentile(lat, 50), "latency_p95_ms": percentile(lat, 95),
            "rss_mb": round(float(np.mean(mem)), 1) if mem else None,
            "rss_max_mb": round(float(np.max(mem)), 1) if mem else None,
            "gpu_mb": round(float(np.mean(gpu)), 1) if gpu else None,
        })
    return rows


def compare(rows: List[Dict[str, Any]], warmup: float, max_growth: float) -> Dict[str, Any]:
    """Start (first window after warm-up) vs end (last window) and the verdict."""
    after = [r for r in rows if r["t_start_s"] >= warmup - 1e-6]
    if len(after) < 2:
        raise SoakError(f"the run is too short for a warm-up of {warmup:g} s and a comparison: "
                        "use a longer --seconds/--minutes, or a shorter --warmup/--window")
    start, end = after[0], after[-1]
    problems = []
    growth = None
    if start["rss_mb"] and end["rss_mb"]:
        growth = (end["rss_mb"] - start["rss_mb"]) / start["rss_mb"] * 100.0
        if growth >= max_growth:
            problems.append(f"RSS grew {growth:.1f} % after warm-up (limit {max_growth:g} %)")
    else:
        problems.append("no RSS samples (the node process was not running?)")
    gpu_growth = None
    if start["gpu_mb"] and end["gpu_mb"]:
        gpu_growth = (end["gpu_mb"] - start["gpu_mb"]) / start["gpu_mb"] * 100.0
    if end["answered"] == 0:
        problems.append("no frames answered in the last window")
    # Post-warm-up RSS slope from the window means: a leak shows as a steady climb.
    pts = [((r["t_start_s"] + r["t_end_s"]) / 2, r["rss_mb"]) for r in after if r["rss_mb"]]
    slope = float(np.polyfit(*zip(*pts), 1)[0]) * 60.0 if len(pts) >= 2 else None
    return {"start": start, "end": end, "rss_growth_pct": None if growth is None else round(growth, 2),
            "rss_slope_mb_per_min": None if slope is None else round(slope, 3),
            "gpu_growth_pct": None if gpu_growth is None else round(gpu_growth, 2),
            "max_rss_growth_pct": max_growth, "problems": problems, "ok": not problems}


# ----------------------------------------------------------------------------- frames

def load_frames(root: Path, limit: int) -> List[np.ndarray]:
    """KITTI road val frames (RGB uint8), cropped to their common size: a camera has one."""
    from PIL import Image

    stems = (root / "kitti_road" / "val.txt").read_text().split()[:limit]
    if not stems:
        raise SoakError(f"no frames listed in {root / 'kitti_road' / 'val.txt'}")
    frames = []
    for s in stems:
        path = root / "kitti_road" / "image_2" / f"{s}.jpg"
        if not path.is_file():
            path = path.with_suffix(".png")
        frames.append(np.asarray(Image.open(path).convert("RGB")))
    h = min(f.shape[0] for f in frames)
    w = min(f.shape[1] for f in frames)
    return [np.ascontiguousarray(f[:h, :w]) for f in frames]


def image_messages(frames: Sequence[np.ndarray], frame_id: str) -> List[Any]:
    from sensor_msgs.msg import Image

    msgs = []
    for f in frames:
        data = array.array("B")
        data.frombytes(f.tobytes())
        msgs.append(Image(height=f.shape[0], width=f.shape[1], encoding="rgb8", is_bigendian=0,
                          step=f.shape[1] * 3, data=data))
        msgs[-1].header.frame_id = frame_id
    return msgs


# ----------------------------------------------------------------------------- node process

class NodeUnderTest(NodeProcess):
    """The soaked node: the shared harness plus a private parameters file removed on stop."""

    def __init__(self, params: Dict[str, Any], env: Dict[str, str], log_path: Path, namespace: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="pspnet_soak_"))
        super().__init__(write_params(self.dir / "params.yaml", params), log_path, env,
                         ros_args=["-r", f"__ns:={namespace}"])

    def stop(self, timeout: float = 10.0) -> Optional[int]:
        code = super().stop(timeout)
        self.params_file.unlink(missing_ok=True)
        self.dir.rmdir()
        return code


class Soak:
    """The publisher, subscribers and samplers around one node process."""

    def __init__(self, args: argparse.Namespace, frames: Sequence[np.ndarray]) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        self.args = args
        self.rec = Record()
        self.domain = args.domain if args.domain is not None else private_domain()
        self.namespace = f"/pspnet_soak_{os.getpid()}"
        self.node_fqn = f"{self.namespace}/segmentation_node"  # its /diagnostics status name
        self.context = rclpy.Context()
        saved = os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE")
        os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"  # read when the participant starts
        try:
            rclpy.init(context=self.context, domain_id=self.domain)
            self.node = rclpy.create_node("pspnet_soak", context=self.context)
        finally:
            if saved is None:
                os.environ.pop("ROS_AUTOMATIC_DISCOVERY_RANGE", None)
            else:
                os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = saved
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        deep = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)  # no losses on our side
        self.msgs = image_messages(frames, "camera")
        self.pub = self.node.create_publisher(Image, f"{self.namespace}/image", reliable)  # like a camera
        self.subs = [self.node.create_subscription(Image, f"{self.namespace}/segmentation/{k}",
                                                   lambda m, k=k: self._on_output(k, m), deep)
                     for k in args.outputs]
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, reliable)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._spin = threading.Thread(target=self._spin_loop, daemon=True)
        self._spin.start()

    def _spin_loop(self) -> None:
        while self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.1)
            except Exception:  # the context went away while spinning
                if self.context.ok():
                    raise
                return

    def _now(self) -> float:
        return time.monotonic() - self.rec.t0

    def _on_output(self, kind: str, msg: Any) -> None:
        t = self._now()
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        with self.rec.lock:
            self.rec.outputs[kind] += 1
            if kind == "labels" and stamp in self.rec.published:
                self.rec.answered.setdefault(stamp, t)

    def _on_diag(self, msg: Any) -> None:
        for status in msg.status:
            if status.name == self.node_fqn:
                with self.rec.lock:
                    self.rec.diag.append((self._now(), {kv.key: kv.value for kv in status.values}))

    def publish(self, i: int) -> int:
        msg = self.msgs[i % len(self.msgs)]
        stamp = time.time_ns()
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
        with self.rec.lock:
            self.rec.published[stamp] = self._now()
        self.pub.publish(msg)
        return stamp

    def wait_ready(self, node: NodeUnderTest, timeout: float) -> None:
        """Publish a frame a second until labels come back (discovery both ways, model loaded)."""
        deadline = time.monotonic() + timeout
        self.rec.t0 = time.monotonic()
        i = 0
        while True:
            if not node.alive():
                raise SoakError(f"the node exited ({node.proc.returncode}) during start-up:\n{node.log_tail()}")
            if time.monotonic() > deadline:
                raise SoakError(f"no labels from the node within {timeout:g} s:\n{node.log_tail()}")
            self.publish(i)
            i += 1
            end = time.monotonic() + 1.0
            while time.monotonic() < end:
                with self.rec.lock:
                    if self.rec.answered:  # this frame's or an earlier one's: the node is up
                        return
                time.sleep(0.02)

    def run(self, node: NodeUnderTest, duration: float) -> None:
        """Publish at the rate for ``duration`` s, sampling RSS every second."""
        with self.rec.lock:
            self.rec.published.clear()
            self.rec.answered.clear()
            self.rec.diag.clear()
            self.rec.rss.clear()
            self.rec.outputs = dict.fromkeys(OUTPUTS, 0)
        period = 1.0 / self.args.rate
        self.rec.t0 = start = time.monotonic()
        next_pub, next_sample, i = start, start, 0
        last_report = start
        while True:
            now = time.monotonic()
            if now - start >= duration:
                break
            if now >= next_sample:
                rss = read_rss_mb(node.proc.pid)
                if rss is None or not node.alive():
                    raise SoakError(f"the node process died after {now - start:.0f} s:\n{node.log_tail()}")
                with self.rec.lock:
                    self.rec.rss.append((now - start, rss))
                next_sample += 1.0
            if now >= next_pub:
                self.publish(i)
                i += 1
                next_pub += period
                if now - next_pub > period:  # fell behind (busy CPU): do not burst to catch up
                    self.rec.late_publishes += 1
                    next_pub = now + period
            if now - last_report >= 60.0:
                last_report = now
                with self.rec.lock:
                    sent, got = len(self.rec.published), len(self.rec.answered)
                    rss = self.rec.rss[-1][1] if self.rec.rss else float("nan")
                LOGGER.info("%4.0f s: %d frames sent, %d answered, node RSS %.1f MiB", now - start, sent, got, rss)
            time.sleep(max(0.0, min(next_pub, next_sample) - time.monotonic()))

    def close(self) -> None:
        self.context.try_shutdown()
        self._spin.join(5)
        self.node.destroy_node()


# ----------------------------------------------------------------------------- CLI

def _fmt(v: Any, nd: int = 1) -> str:
    if v is None:
        return "n/a"
    return f"{v:.{nd}f}" if isinstance(v, float) else str(v)


def print_report(result: Dict[str, Any]) -> None:
    cmp_ = result["comparison"]
    cols = ("window", "sent Hz", "node in Hz", "answered Hz", "unanswered", "node drops", "failed",
            "lat p50 ms", "lat p95 ms", "RSS MiB", "GPU MiB")
    rows = []
    for label, r in (("start (after warm-up)", cmp_["start"]), ("end", cmp_["end"])):
        span = r["t_end_s"] - r["t_start_s"]
        rows.append((f"{label} {r['t_start_s']:.0f}-{r['t_end_s']:.0f} s", _fmt(r["sent_hz"]),
                     _fmt(r["node_received"] / span if span > 0 else None), _fmt(r["answered_hz"]),
                     str(r["unanswered"]), str(r["node_dropped"]),
                     str(r["node_failed"]), _fmt(r["latency_p50_ms"]), _fmt(r["latency_p95_ms"]),
                     _fmt(r["rss_mb"]), _fmt(r["gpu_mb"])))
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    line = "  ".join(c.ljust(w) for c, w in zip(cols, widths))
    print(line)
    print("-" * len(line))
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)))
    t = result["totals"]
    print(f"\nrun: {result['duration_s']:.0f} s at {result['rate_hz']:g} Hz ({result['frame_size']} rgb8 KITTI "
          f"frames), warm-up {result['warmup_s']:g} s, model {result['model']} on {result['device']}")
    print(f"frames: {t['sent']} sent, {t['answered']} answered ({t['answered_pct']:.1f} %); node: "
          f"{t['node_received']} taken from its keep-last input, {t['node_processed']} processed, "
          f"{t['node_dropped']} dropped by the engine, {t['node_failed']} failed (newest frame wins at both "
          f"places); {t['late_publishes']} late publishes")
    print(f"latency (publish -> labels received): p50 {_fmt(t['latency_p50_ms'])} ms, "
          f"p95 {_fmt(t['latency_p95_ms'])} ms")
    print(f"RSS: {_fmt(cmp_['start']['rss_mb'])} -> {_fmt(cmp_['end']['rss_mb'])} MiB, growth "
          f"{_fmt(cmp_['rss_growth_pct'], 2)} % (limit {cmp_['max_rss_growth_pct']:g} %), slope "
          f"{_fmt(cmp_['rss_slope_mb_per_min'], 3)} MiB/min; GPU growth {_fmt(cmp_['gpu_growth_pct'], 2)} %")
    print(f"node exit on SIGINT: code {result['node_exit_code']} in {_fmt(result['node_stop_s'], 2)} s")
    print("PASS" if result["ok"] else "FAIL: " + "; ".join(result["problems"]))


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pspnet soak", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    length = p.add_mutually_exclusive_group()
    length.add_argument("--minutes", type=float, help="run length in minutes (default 30)")
    length.add_argument("--seconds", type=float, help="run length in seconds")
    p.add_argument("--checkpoint", default="auto", help="node parameter 'checkpoint' (default auto)")
    p.add_argument("--device", default="auto", help="node parameter 'device' (default auto)")
    p.add_argument("--inference-size", default=None, metavar="HxW",
                   help="node parameter 'inference_size' (default: the checkpoint's)")
    p.add_argument("--rate", type=float, default=30.0, help="camera rate in Hz (default 30)")
    p.add_argument("--warmup", type=float, default=None,
                   help="seconds excluded from the comparison (default: 20 %% of the run, at most 120)")
    p.add_argument("--window", type=float, default=None,
                   help="seconds per reporting window (default: a sixth of the run, 5-60)")
    p.add_argument("--outputs", default=",".join(OUTPUTS),
                   help=f"node outputs to subscribe to (computed and sent), default {','.join(OUTPUTS)}")
    p.add_argument("--frames", type=int, default=29, help="KITTI val frames to cycle (default 29 = all)")
    p.add_argument("--data-root", default=None, help="datasets folder (default: ../shared/data)")
    p.add_argument("--max-rss-growth", type=float, default=5.0,
                   help="RSS growth after warm-up that fails the run, in %% (default 5)")
    p.add_argument("--json", type=Path, default=Path("soak.json"),
                   help="result file (default soak.json); the node's log goes next to it (.node.log)")
    p.add_argument("--domain", type=int, default=None,
                   help="ROS_DOMAIN_ID (default: one of 201-232, from the pid)")
    p.add_argument("--startup-timeout", type=float, default=300.0,
                   help="seconds to wait for the node's first answer (default 300)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _check_args(args: argparse.Namespace) -> float:
    duration = args.seconds if args.seconds is not None else 60.0 * (args.minutes if args.minutes is not None else 30.0)
    if duration <= 0 or args.rate <= 0:
        raise SoakError("--minutes/--seconds and --rate must be positive")
    args.outputs = tuple(o.strip() for o in args.outputs.split(",") if o.strip())
    unknown = sorted(set(args.outputs) - set(OUTPUTS))
    if unknown or "labels" not in args.outputs:
        raise SoakError(f"--outputs must include labels and only name {', '.join(OUTPUTS)}; got {args.outputs}")
    if args.warmup is None:
        args.warmup = min(120.0, 0.2 * duration)
    if args.window is None:
        args.window = max(5.0, min(60.0, duration / 6.0))
    return duration


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = get_args_parser().parse_args(argv)
    args.command = "pspnet soak " + shlex.join(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                            format="%(levelname)s %(name)s: %(message)s")
    try:
        duration = _check_args(args)
        result = soak(args, duration)
    except SoakError as exc:
        LOGGER.error("%s", exc)
        return 1
    except KeyboardInterrupt:
        LOGGER.error("interrupted")
        return 130
    print_report(result)
    return 0 if result["ok"] else 1


def soak(args: argparse.Namespace, duration: float) -> Dict[str, Any]:
    from ...paths import data_root

    root = data_root(args.data_root)
    frames = load_frames(root, args.frames)
    params: Dict[str, Any] = {"checkpoint": str(args.checkpoint), "device": args.device,
                              "diagnostics_period": 1.0}
    if args.inference_size:
        try:
            params["inference_size"] = [int(v) for v in args.inference_size.lower().split("x")]
        except ValueError:
            raise SoakError(f"--inference-size must look like 188x621, got {args.inference_size!r}") from None
    args.json.parent.mkdir(parents=True, exist_ok=True)
    log_path = args.json.with_suffix(".node.log")
    s = Soak(args, frames)
    env = node_env(s.domain)
    node = NodeUnderTest(params, env, log_path, s.namespace)
    LOGGER.info("node %s (pid %d) on ROS domain %d, log %s; %d frames %dx%d at %g Hz for %g s",
                s.node_fqn, node.proc.pid, s.domain, log_path, len(frames), frames[0].shape[1], frames[0].shape[0],
                args.rate, duration)
    try:
        s.wait_ready(node, args.startup_timeout)
        LOGGER.info("node answers; soaking")
        s.run(node, duration)
        time.sleep(2.0)  # let the last answers and diagnostics arrive
    finally:
        node.stop()
        s.close()
    rows = summarize_windows(s.rec, duration, args.window)
    comparison = compare(rows, args.warmup, args.max_rss_growth)
    with s.rec.lock:
        lat = [(s.rec.answered[k] - t) * 1000.0 for k, t in s.rec.published.items() if k in s.rec.answered]
        sent, answered = len(s.rec.published), len(s.rec.answered)
        last_diag = s.rec.diag[-1][1] if s.rec.diag else {}
        outputs = dict(s.rec.outputs)
    problems = list(comparison["problems"])
    if node.exit_code != 0:
        problems.append(f"the node exited with code {node.exit_code} on SIGINT")
    result = {
        "command": args.command,
        "duration_s": duration, "rate_hz": args.rate, "warmup_s": args.warmup, "window_s": args.window,
        "checkpoint": str(args.checkpoint), "device": last_diag.get("device", args.device),
        "model": last_diag.get("model", "?"), "inference_size": last_diag.get("inference size"),
        "frame_size": f"{frames[0].shape[1]}x{frames[0].shape[0]}", "outputs": list(args.outputs),
        "node_log": str(log_path), "node_exit_code": node.exit_code, "node_stop_s": node.stop_s,
        "totals": {
            "sent": sent, "answered": answered, "answered_pct": 100.0 * answered / max(sent, 1),
            "outputs_received": outputs,
            "node_received": int(_num(last_diag.get("received (total)")) or 0),
            "node_processed": int(_num(last_diag.get("processed (total)")) or 0),
            "node_dropped": int(_num(last_diag.get("dropped (total)")) or 0),
            "node_failed": int(_num(last_diag.get("failed (total)")) or 0),
            "late_publishes": s.rec.late_publishes,
            "latency_p50_ms": percentile(lat, 50), "latency_p95_ms": percentile(lat, 95),
        },
        "comparison": comparison, "windows": rows,
        "rss_samples": [(round(t, 1), round(m, 1)) for t, m in s.rec.rss],
        "problems": problems, "ok": not problems,
    }
    args.json.write_text(json.dumps(result, indent=2))
    LOGGER.info("results written to %s", args.json)
    return result


if __name__ == "__main__":
    sys.exit(main())
