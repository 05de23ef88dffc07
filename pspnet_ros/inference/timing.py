"""Stage timing on CUDA and CPU, and a rolling latency window with percentiles.

Stage timing works the same on CUDA (events on the streams) and CPU (wall clock).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from typing import Deque, Dict, Iterable, List, Optional, Tuple

import numpy as np
import torch

STAGES = ("decode", "upload", "preprocess", "inference", "postprocess", "download")


class CpuEvent:
    """Stand-in for ``torch.cuda.Event`` on CPU: work is synchronous, so 'recorded' = now."""

    def __init__(self) -> None:
        self.t: Optional[float] = None

    def record(self, stream=None) -> None:  # noqa: ARG002 - same signature as torch.cuda.Event
        self.t = time.perf_counter()

    def synchronize(self) -> None:
        pass

    def query(self) -> bool:
        return True

    def elapsed_time(self, end: "CpuEvent") -> float:
        return (end.t - self.t) * 1000.0


class Device:
    """Streams and events for one device.

    On CPU they are no-ops with the same interface, so the engine's pipelined code path is one and
    the same on both.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.is_cuda = device.type == "cuda"

    def stream(self):
        return torch.cuda.Stream(self.device) if self.is_cuda else None

    def use(self, stream):
        return torch.cuda.stream(stream) if self.is_cuda and stream is not None else contextlib.nullcontext()

    def event(self, timing: bool = True, blocking: bool = False):
        """Return a CUDA event (a ``CpuEvent`` on CPU).

        ``blocking=True`` for events the CPU waits on: ``synchronize()`` then sleeps in the driver
        instead of spinning a core, which a robot needs for its other nodes.
        """
        if not self.is_cuda:
            return CpuEvent()
        return torch.cuda.Event(enable_timing=timing, blocking=blocking)

    def wait(self, stream, event) -> None:
        """Make ``stream`` wait for ``event`` (no-op on CPU)."""
        if self.is_cuda:
            stream.wait_event(event)

    def record_stream(self, tensor: torch.Tensor, stream) -> None:
        """Tell the caching allocator ``tensor`` is used on ``stream`` (no-op on CPU)."""
        if self.is_cuda and stream is not None and tensor.is_cuda:
            tensor.record_stream(stream)


class StageClock:
    """Begin/end marks per stage, recorded on whatever stream is current; read after sync."""

    def __init__(self, dev: Device) -> None:
        self.dev = dev
        self._marks: Dict[str, List] = {}
        self.extra_ms: Dict[str, float] = {}

    def begin(self, stage: str, stream=None) -> None:
        ev = self.dev.event()
        self._record(ev, stream)
        self._marks[stage] = [ev, None]

    def end(self, stage: str, stream=None) -> None:
        ev = self.dev.event()
        self._record(ev, stream)
        self._marks[stage][1] = ev

    def _record(self, ev, stream) -> None:
        if stream is not None and self.dev.is_cuda:
            ev.record(stream)
        else:
            ev.record()

    @contextlib.contextmanager
    def stage(self, name: str, stream=None):
        self.begin(name, stream)
        yield
        self.end(name, stream)

    def add(self, stage: str, ms: float) -> None:
        """Add a wall-clock measurement (CPU-side work such as CPU decoding)."""
        self.extra_ms[stage] = self.extra_ms.get(stage, 0.0) + ms

    def durations(self) -> Dict[str, float]:
        """Milliseconds per stage; call once every recorded event has completed."""
        out = dict(self.extra_ms)
        for stage, (a, b) in self._marks.items():
            if b is not None:
                out[stage] = out.get(stage, 0.0) + float(a.elapsed_time(b))
        return out


class LatencyWindow:
    """The last ``size`` latencies (ms), thread-safe, with percentiles."""

    def __init__(self, size: int = 1000) -> None:
        self._values: Deque[float] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, value_ms: float) -> None:
        with self._lock:
            self._values.append(float(value_ms))

    def __len__(self) -> int:
        return len(self._values)

    def percentiles(self, qs: Iterable[int] = (50, 95, 99)) -> Dict[str, Optional[float]]:
        with self._lock:
            values = np.fromiter(self._values, float, len(self._values))
        if values.size == 0:
            return {f"p{q}": None for q in qs}
        return {f"p{q}": round(float(np.percentile(values, q)), 3) for q in qs}


class StageWindow:
    """Mean per-stage milliseconds over the last ``size`` batches."""

    def __init__(self, size: int = 200) -> None:
        self._rows: Deque[Dict[str, float]] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, stages: Dict[str, float]) -> None:
        with self._lock:
            self._rows.append(dict(stages))

    def means(self) -> Dict[str, float]:
        with self._lock:
            rows = list(self._rows)
        keys: Dict[str, Tuple[float, int]] = {}
        for row in rows:
            for k, v in row.items():
                s, n = keys.get(k, (0.0, 0))
                keys[k] = (s + v, n + 1)
        order = [s for s in STAGES if s in keys] + sorted(k for k in keys if k not in STAGES)
        return {k: round(keys[k][0] / keys[k][1], 3) for k in order}
