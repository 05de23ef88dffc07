"""Per-camera statistics and the /diagnostics status built from them.

diagnostic_updater is not installable everywhere, so the node publishes
``diagnostic_msgs/DiagnosticArray`` itself: one ``DiagnosticStatus`` per camera per period.
Counters are updated from two threads (the executor's image callback and the engine worker's
result callback), hence the lock.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Deque, Dict, List, Optional, Tuple, Union

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

OK = DiagnosticStatus.OK
WARN = DiagnosticStatus.WARN
ERROR = DiagnosticStatus.ERROR

# Counter names (all totals since start):
#   received       frames that arrived on the input topic
#   processed      frames whose outputs were published
#   bad_input      frames refused by the conversion or the decoder (bad encoding, sizes, data)
#   failed         frames the engine failed on (e.g. out of memory)
#   paused         frames ignored while ~/enable is false
#   rate_limited   frames skipped by max_rate
#   no_subscribers frames not processed because nobody subscribes to any output
#   rejected       frames the engine did not accept (queue full / stopping)
#   bad_camera_info  camera_info messages that do not describe the image (not republished)
#   lost           frames that never reached the node's callback (publication sequence gaps, or
#                  gaps in the header stamps against the camera's period; see loss_meter.py:
#                  keep-last replacements while the executor was busy, frames the network or
#                  the publisher lost)
#   lost_rmw       samples the middleware reported lost (message-lost event, where the RMW has it)
#   deactivated    frames in the engine when a managed node was deactivated, not published
COUNTERS = ("received", "processed", "bad_input", "failed", "paused", "rate_limited",
            "no_subscribers", "rejected", "bad_camera_info", "lost", "lost_rmw", "deactivated")
@dataclass
class Window:
    """What happened in one diagnostics period (deltas) plus totals."""

    period_s: float
    delta: Dict[str, int]
    total: Dict[str, int]
    dropped: int  # engine drops (latest-wins replacements) in the window
    dropped_total: int
    latency_p50_ms: Optional[float]
    latency_p95_ms: Optional[float]
    last_error: str = ""
    camera_hz: Optional[float] = None  # from the stamps (loss_meter.LossMeter.period)
    # mean ms per frame of the node's own work outside the engine: "receive" (message -> numpy
    # view -> submit, executor thread) and "publish" (outputs -> messages -> DDS, worker thread);
    # "dds transfer" / "executor wait" of the input where the RMW stamps samples
    node_ms: Dict[str, float] = field(default_factory=dict)

    @property
    def input_hz(self) -> float:
        return self.delta["received"] / self.period_s

    @property
    def output_hz(self) -> float:
        return self.delta["processed"] / self.period_s

    @property
    def lost_hz(self) -> float:
        """Frames per second lost before the node's callback (stamp gaps)."""
        return self.delta["lost"] / self.period_s


@dataclass
class CameraStats:
    """Thread-safe counters and latency samples for one camera."""

    counts: Dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    latencies: Deque[float] = field(default_factory=lambda: deque(maxlen=2048))
    last_error: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _last_counts: Dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    _last_dropped: int = 0
    _last_time: float = field(default_factory=time.monotonic)
    _stages: Dict[str, Tuple[float, int]] = field(default_factory=dict)

    def count(self, key: str, n: int = 1, error: Optional[str] = None) -> None:
        with self._lock:
            self.counts[key] += n
            if error:
                self.last_error = error

    def add_latency(self, ms: float) -> None:
        with self._lock:
            self.latencies.append(ms)

    def add_stage(self, name: str, ms: float) -> None:
        """Add one frame's time (ms) in a node stage (``receive`` or ``publish``)."""
        with self._lock:
            total, n = self._stages.get(name, (0.0, 0))
            self._stages[name] = (total + ms, n + 1)

    def window(self, dropped_total: int, camera_period: Optional[float] = None) -> Window:
        """Deltas since the previous call; latency percentiles over the samples in between."""
        now = time.monotonic()
        with self._lock:
            total = dict(self.counts)
            delta = {k: total[k] - self._last_counts[k] for k in COUNTERS}
            lat = np.asarray(self.latencies, dtype=np.float64)
            self.latencies.clear()
            period = max(now - self._last_time, 1e-3)
            dropped = max(dropped_total - self._last_dropped, 0)
            self._last_counts, self._last_dropped, self._last_time = total, dropped_total, now
            last_error, self.last_error = self.last_error, ""
            stages = {k: t / n for k, (t, n) in self._stages.items() if n}
            self._stages = {}
        p50 = float(np.percentile(lat, 50)) if lat.size else None
        p95 = float(np.percentile(lat, 95)) if lat.size else None
        return Window(period, delta, total, dropped, dropped_total, p50, p95, last_error,
                      1.0 / camera_period if camera_period else None, stages)


def assess(w: Window, paused: bool, input_topic: str) -> Tuple[int, str]:
    """(level, message) for one camera's window.

    ERROR: frames arrive but none comes out because every one fails or is unusable.
    WARN: no input, some frames failed or were unusable, or the output rate collapsed below
    half of the rate of frames that should have been processed (model slower than the camera).
    """
    d = w.delta
    if paused:
        return OK, "paused (~/enable is false)"
    if d["received"] == 0:
        return WARN, f"no frames on {input_topic} for {w.period_s:.1f} s"
    if d["processed"] == 0 and (d["failed"] or d["bad_input"]):
        what = "failed" if d["failed"] else "were unusable"
        return ERROR, f"all frames {what}: {w.last_error}"
    if d["failed"] or d["bad_input"]:
        return WARN, (f"{d['failed']} frames failed, {d['bad_input']} unusable in "
                      f"{w.period_s:.1f} s: {w.last_error}")
    if d["lost"] >= 2 and d["lost"] > d["received"]:
        return WARN, (f"more frames lost before the node than received: camera "
                      f"{_fmt(w.camera_hz)} Hz, in {w.input_hz:.1f} Hz, lost {w.lost_hz:.1f}/s "
                      "(the node's input queue keeps the latest frame: a busy executor or a "
                      "lossy network; see README troubleshooting)")
    eligible = d["received"] - d["rate_limited"] - d["no_subscribers"] - d["paused"]
    if eligible >= 2 and d["processed"] < 0.5 * eligible:
        return WARN, (f"output {w.output_hz:.1f} Hz is below half the input rate "
                      f"({eligible / w.period_s:.1f} Hz to process): {w.dropped} frames dropped; "
                      "lower inference_size, set max_rate, or use a faster device")
    if d["no_subscribers"] and d["processed"] == 0:
        return OK, "idle: no subscribers on the outputs"
    return OK, f"ok: {w.output_hz:.1f} Hz"


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.2f}"
    return str(v)


def build_status(name: str, hardware_id: str, w: Window, paused: bool, input_topic: str,
                 engine_stats: Dict[str, Any], model: str, inference_size: Union[Tuple[int, int], str],
                 state: str = "active", managed: bool = False, transport_hint: str = "") -> DiagnosticStatus:
    """One camera's DiagnosticStatus: level and message from :func:`assess`, every counter.

    ``transport_hint``: the middleware setting that large best-effort frames need, when it is
    missing (:mod:`pspnet_ros.ros.transport_hint`); it is shown as ``transport`` and, while no
    frame arrives, turns the WARN message into that advice.
    """
    level, message = assess(w, paused, input_topic)
    if transport_hint and not paused and w.delta["received"] == 0:
        level, message = WARN, f"no frames on {input_topic}: {transport_hint}"
    values: List[Tuple[str, Any]] = [
        ("lifecycle state", state),
        ("managed", managed),
        ("input topic", input_topic),
        ("camera rate (Hz, from stamps)", w.camera_hz),
        ("input rate (Hz)", w.input_hz),
        ("output rate (Hz)", w.output_hz),
        ("lost before the node (/s)", w.lost_hz),
        ("lost before the node (total)", w.total["lost"]),
        ("lost, reported by the middleware (total)", w.total["lost_rmw"]),
        ("not published at deactivate (total)", w.total["deactivated"]),
        ("dropped (window)", w.dropped),
        ("dropped (total)", w.dropped_total),
        ("failed (total)", w.total["failed"]),
        ("bad input (total)", w.total["bad_input"]),
        ("received (total)", w.total["received"]),
        ("processed (total)", w.total["processed"]),
        ("skipped by max_rate (total)", w.total["rate_limited"]),
        ("skipped, no subscribers (total)", w.total["no_subscribers"]),
        ("paused (total)", w.total["paused"]),
        ("camera_info mismatches (total)", w.total["bad_camera_info"]),
        ("latency p50 (ms)", w.latency_p50_ms),
        ("latency p95 (ms)", w.latency_p95_ms),
    ]
    for stage, ms in sorted((engine_stats.get("stages_ms") or {}).items()):
        values.append((f"stage {stage} (ms)", float(ms) if ms is not None else None))
    # The node's own per-frame work outside the engine (receive, publish), and, where the RMW
    # stamps samples, the input's transfer and its wait for the executor.
    for stage in ("dds transfer", "executor wait", "receive", "publish"):
        values.append((f"node {stage} (ms)", w.node_ms.get(stage)))
    values += [
        ("device", engine_stats.get("device", "")),
        ("backend", engine_stats.get("backend", "")),
        ("precision", engine_stats.get("precision", "")),
        ("inference threads", engine_stats.get("cpu_threads")),
        ("gpu memory (MB)", engine_stats.get("gpu_memory_mb")),
        ("model", model),
        ("inference size", inference_size if isinstance(inference_size, str)
         else f"{inference_size[0]}x{inference_size[1]}"),
    ]
    if transport_hint:
        values.append(("transport", transport_hint))
    if w.last_error:
        values.append(("last error", w.last_error))
    return DiagnosticStatus(level=level, name=name, message=message, hardware_id=hardware_id,
                            values=[KeyValue(key=k, value=_fmt(v)) for k, v in values])


def state_status(name: str, hardware_id: str, state: str, message: str) -> DiagnosticStatus:
    """Build the status of a managed node that serves no camera (unconfigured or inactive)."""
    return DiagnosticStatus(level=OK, name=name, message=message, hardware_id=hardware_id,
                            values=[KeyValue(key="lifecycle state", value=state),
                                    KeyValue(key="managed", value="True")])


def log_line(label: str, w: Window) -> str:
    """Format the same numbers in one line for the throttled log."""
    return (f"{label}: in {w.input_hz:.1f} Hz, out {w.output_hz:.1f} Hz, lost {w.lost_hz:.1f}/s, "
            f"dropped {w.dropped_total}, "
            f"failed {w.total['failed']}, bad {w.total['bad_input']}, latency p50 "
            f"{_fmt(w.latency_p50_ms)} ms p95 {_fmt(w.latency_p95_ms)} ms")
