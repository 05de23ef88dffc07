"""``RealtimeEngine``: frames in from any thread, segmented results out on a worker thread.

Scheduling. With ``drop_policy="latest"`` each source has a one-frame slot: ``submit`` puts the
frame there and returns at once, replacing (and counting as dropped) a frame the worker has
not taken yet, so a slow model never builds a backlog and always works on the newest image.
With ``"queue"`` frames wait in one bounded FIFO and ``submit`` blocks while it is full
(back-pressure for offline processing: nothing is dropped, each source's order is kept). The worker takes up
to ``max_batch`` frames at once (one per source with ``latest``) and runs frames of the same
size in one forward pass.

CUDA (``pipeline.py``): batches go through a pinned ring over copy / compute / download streams,
``pipeline_depth`` of them in flight, so the upload of batch N+1 and the download of batch N
overlap the compute of N and N+1; encoded frames are decoded by ``decode.py`` (nvJPEG on its own
stream on CUDA). On CPU the same code runs with no-op streams, synchronously.

Errors never stop the worker: a bad frame (InputError) is reported as ``bad_input``, a CUDA
out-of-memory as ``oom`` (after ``torch.cuda.empty_cache()``), anything else as ``failed``,
through ``on_error`` and the counters.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import OrderedDict, deque
from typing import Any, Callable, Deque, Dict, FrozenSet, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..errors import InputError
from . import ops
from .decode import decode_item
from .inputs import validate_frame
from .pipeline import Batch, CudaPipeline, Item, wants_device_input
from .segmenter import Segmenter, rgb_view, to_numpy_outputs
from .timing import Device, LatencyWindow, StageClock, StageWindow
from .types import ERROR_KINDS, EngineConfig, FrameError, FrameResult, check_outputs

log = logging.getLogger(__name__)

#: Settings ``update()`` may change while running (the rest need a new engine).
RUNTIME_SETTINGS = ("overlay_alpha", "outputs", "drivable_classes", "upsample", "output_resolution")
_LOG_EVERY_S = 5.0


# Errors after which a CUDA context is unusable (every later call fails too).
STICKY_CUDA_ERRORS = ("illegal memory access", "device-side assert", "unspecified launch failure",
                      "misaligned address", "an illegal instruction", "cuda error: unknown error",
                      "device not ready", "uncorrectable ecc")


def classify_error(exc: BaseException) -> str:
    """Return the :class:`FrameError` kind of an exception (one of ``ERROR_KINDS``)."""
    if isinstance(exc, InputError):
        return "bad_input"
    text = str(exc).lower()
    if "cuda" in text and any(k in text for k in STICKY_CUDA_ERRORS):
        return "device_lost"
    if isinstance(exc, torch.OutOfMemoryError) or (
            isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()):
        return "oom"
    return "failed"


class _SourceStats:
    __slots__ = ("submitted", "processed", "dropped", "failed", "latency", "done_times")

    def __init__(self, window: int) -> None:
        self.submitted = self.processed = self.dropped = self.failed = 0
        self.latency = LatencyWindow(window)
        self.done_times: Deque[float] = deque(maxlen=100)

    def fps(self) -> Optional[float]:
        t = self.done_times
        if len(t) < 2 or t[-1] <= t[0]:
            return None
        return round((len(t) - 1) / (t[-1] - t[0]), 2)

    def snapshot(self) -> Dict[str, Any]:
        return {"submitted": self.submitted, "processed": self.processed, "dropped": self.dropped,
                "failed": self.failed, "latency_ms": self.latency.percentiles(), "fps": self.fps()}


class RealtimeEngine:
    """Runs a :class:`Segmenter` on a worker thread for frames submitted from any thread.

    ``on_result(FrameResult)`` and ``on_error(FrameError)`` are called on the worker thread, in
    processing order; keep them short (hand the result to another thread for slow work), and
    do not ``submit`` from them with the ``queue`` policy (a full queue would wait on itself).
    ``fault_hook(frames)`` (tests) is called with the batch's frame records before each forward
    and may raise to simulate failures, e.g. ``torch.cuda.OutOfMemoryError``.
    """

    def __init__(self, segmenter: Segmenter, config: Optional[EngineConfig] = None,
                 on_result: Optional[Callable[[FrameResult], None]] = None,
                 on_error: Optional[Callable[[FrameError], None]] = None, *,
                 fault_hook: Optional[Callable[[Sequence[Any]], None]] = None,
                 use_ring: Optional[bool] = None) -> None:
        self.seg = segmenter
        self._cfg = config if config is not None else EngineConfig()
        self._luts = self._make_luts(self._cfg)
        self.on_result = on_result
        self.on_error = on_error
        self.fault_hook = fault_hook
        self._dev = Device(segmenter.device)
        # use_ring=True on CPU runs the CUDA pipeline code with no-op streams (tests).
        self._use_ring = self._dev.is_cuda if use_ring is None else bool(use_ring)
        self._depth = self._cfg.pipeline_depth or (2 if self._dev.is_cuda else 1)
        self._pipe: Optional[CudaPipeline] = None
        self._streams: Dict[str, Any] = {}
        self._gpu_decode = self._dev.is_cuda and self._cfg.gpu_decode
        self._warming = False

        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._space = threading.Condition(self._lock)
        self._idle = threading.Condition(self._lock)
        self._slots: "OrderedDict[str, Item]" = OrderedDict()
        self._fifo: Deque[Item] = deque()
        self._outstanding = 0
        self._running = False
        self._thread: Optional[threading.Thread] = None

        self._total = _SourceStats(self._cfg.latency_window)
        self._sources: Dict[str, _SourceStats] = {}
        self._stage_window = StageWindow()
        self._batch_sizes: Deque[int] = deque(maxlen=200)
        self._errors = dict.fromkeys(ERROR_KINDS, 0)
        self._callback_errors = 0
        self._last_log: Dict[str, Tuple[float, int]] = {}

    # ------------------------------------------------------------------ configuration

    @property
    def config(self) -> EngineConfig:
        return self._cfg

    @property
    def running(self) -> bool:
        return self._running

    def _make_luts(self, cfg: EngineConfig) -> ops.Luts:
        wants_drivable = "drivable" in cfg.outputs
        ids = self.seg.drivable_ids(cfg.drivable_classes) if wants_drivable else ()
        return self.seg.luts(ids)

    def update(self, **changes: Any) -> EngineConfig:
        """Change the output settings while running; takes effect from the next batch.

        Accepts ``overlay_alpha``, ``outputs``, ``drivable_classes``, ``upsample`` or
        ``output_resolution``.
        """
        fixed = sorted(set(changes) - set(RUNTIME_SETTINGS))
        if fixed:
            raise ValueError(f"cannot change {', '.join(fixed)} at runtime (only "
                             f"{', '.join(RUNTIME_SETTINGS)}); create a new engine")
        cfg = self._cfg.replace(**changes)
        luts = self._make_luts(cfg)
        with self._lock:
            self._cfg, self._luts = cfg, luts
        return cfg

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> "RealtimeEngine":
        """Warm up (compile / capture CUDA graphs if configured) and start the worker thread.

        Blocks for the warm-up, so the first real frame is not slow.
        """
        if self._thread is not None and self._thread.is_alive():
            return self
        cfg = self._cfg
        if self._pipe is None and (self._use_ring or self._dev.is_cuda):
            self._pipe = CudaPipeline(self._dev, self._depth, cfg.max_batch)
            self._streams = self._pipe.streams
        if cfg.warmup or cfg.compile or cfg.cuda_graphs:
            with self._dev.use(self._streams.get("compute")):
                self.seg.prepare(cfg.max_batch, compile=cfg.compile, cuda_graphs=cfg.cuda_graphs,
                                 warmup=cfg.warmup)
        if cfg.warmup:
            self._warm_pipeline()
        with self._lock:
            self._running = True
        self._thread = threading.Thread(target=self._worker, name="pspnet-engine", daemon=True)
        self._thread.start()
        return self

    def _warm_pipeline(self) -> None:
        """Run dummy frames at the inference size through the whole path once per ring slot and batch size.

        The batch sizes are 1 and ``max_batch``: pinned and device buffers, resize/normalize,
        forward, post-processing and download are all allocated and run before the first real frame.
        Nothing is delivered or counted. Frames of another size allocate their own buffers on first
        use.
        """
        h, w = self.seg.inference_size
        dummy = np.zeros((h, w, 3), np.uint8)
        self._warming = True
        t0 = time.perf_counter()
        try:
            with torch.inference_mode():
                for b in sorted({1, self._cfg.max_batch}):
                    group = []
                    for _ in range(b):
                        it = Item(dummy, None, None, None, "__warmup__", None, False, None)
                        it.shape = (h, w)
                        group.append(it)
                    for _ in range(len(self._pipe.ring) if self._use_ring and self._pipe else 1):
                        batch = self._launch(group)
                        if batch is not None and batch.ready is not None:
                            batch.ready.synchronize()
            log.debug("engine pipeline warm-up in %.1f ms", (time.perf_counter() - t0) * 1000.0)
        except Exception as exc:  # noqa: BLE001 - a real frame will report the problem
            log.warning("engine warm-up failed (%s: %s)", type(exc).__name__, exc)
        finally:
            self._warming = False

    def stop(self, timeout: float = 2.0) -> bool:
        """Stop accepting frames, discard pending ones (counted as dropped), finish in-flight batches, join the worker.

        Returns False if it did not exit within ``timeout``.
        """
        with self._lock:
            self._running = False
            pending = list(self._slots.values()) + list(self._fifo)
            self._slots.clear()
            self._fifo.clear()
            for item in pending:
                self._count_drop(item.source_id)
                self._outstanding -= 1
            self._work.notify_all()
            self._space.notify_all()
            self._idle.notify_all()
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        if thread.is_alive():
            log.warning("engine worker did not stop within %.1f s (a callback still running?)", timeout)
            return False
        self._thread = None
        return True

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Wait until every accepted frame has been delivered (result or error)."""
        with self._lock:
            return self._idle.wait_for(lambda: self._outstanding <= 0 or not self._running, timeout) \
                and self._outstanding <= 0

    def __enter__(self) -> "RealtimeEngine":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ submitting

    def submit(self, frame: Any, stamp: Any, source_id: str = "default", bgr: bool = False,
               context: Any = None, outputs: Optional[Iterable[str]] = None, *,
               block: bool = True) -> bool:
        """Hand over an (H, W, 3) uint8 frame (numpy or tensor; not copied - do not modify it afterwards).

        Returns False if the engine is not running (the frame counts as dropped). ``outputs``
        overrides the configured outputs for this frame. With the ``queue`` policy a full queue
        makes ``submit`` wait for space; ``block=False`` refuses the frame instead (returns False,
        counted as dropped), for callers that must never wait (an executor).

        A CUDA tensor must be ready on the caller's *current* stream when ``submit`` is called:
        the engine records an event there and its compute stream waits for that event before
        reading the frame (work queued later on that stream is not waited for).
        """
        if outputs is not None:
            outputs = check_outputs(outputs)
        item = Item(frame, None, None, stamp, str(source_id), context, bgr, outputs)
        if isinstance(frame, torch.Tensor) and frame.is_cuda:
            ev = torch.cuda.Event(enable_timing=False)
            ev.record(torch.cuda.current_stream(frame.device))
            item.frame_ready = ev
        return self._enqueue(item, block)

    def submit_encoded(self, data: bytes, fmt: Optional[str], stamp: Any, source_id: str = "default",
                       context: Any = None, outputs: Optional[Iterable[str]] = None, *,
                       block: bool = True) -> bool:
        """Hand over JPEG/PNG bytes; they are checked and decoded on the worker (nvJPEG on CUDA, OpenCV otherwise).

        ``fmt``: 'jpeg', 'png' or None to detect. ``block`` as in :meth:`submit`.
        """
        if outputs is not None:
            outputs = check_outputs(outputs)
        return self._enqueue(Item(None, data, fmt, stamp, str(source_id), context, False, outputs), block)

    def _source(self, sid: str) -> _SourceStats:
        s = self._sources.get(sid)
        if s is None:
            s = self._sources[sid] = _SourceStats(self._cfg.latency_window)
        return s

    def _count_drop(self, sid: str) -> None:  # lock held
        self._source(sid).dropped += 1
        self._total.dropped += 1

    def _enqueue(self, item: Item, block: bool = True) -> bool:
        cfg = self._cfg
        with self._lock:
            src = self._source(item.source_id)
            src.submitted += 1
            self._total.submitted += 1
            if not self._running:
                self._count_drop(item.source_id)
                return False
            item.t_submit = time.perf_counter()
            if cfg.drop_policy == "latest":
                old = self._slots.pop(item.source_id, None)
                if old is not None:
                    self._count_drop(item.source_id)
                    self._outstanding -= 1
                self._slots[item.source_id] = item
            else:
                if not block and len(self._fifo) >= cfg.queue_size:
                    self._count_drop(item.source_id)
                    return False
                while len(self._fifo) >= cfg.queue_size and self._running:
                    self._space.wait()
                if not self._running:
                    self._count_drop(item.source_id)
                    return False
                self._fifo.append(item)
            self._outstanding += 1
            self._work.notify()
        return True

    def _take(self, block: bool) -> List[Item]:
        max_batch = self._cfg.max_batch
        with self._lock:
            while not (self._slots or self._fifo):
                if not block or not self._running:
                    return []
                self._work.wait(0.5)
            items: List[Item] = []
            # Oldest pending first (slots are re-inserted on every submit, so dict order is
            # submit order): fair across sources.
            while self._slots and len(items) < max_batch:
                items.append(self._slots.popitem(last=False)[1])
            while self._fifo and len(items) < max_batch:
                items.append(self._fifo.popleft())
            self._space.notify_all()
            return items

    # ------------------------------------------------------------------ worker

    def _worker(self) -> None:
        dev_ctx = torch.cuda.device(self._dev.device) if self._dev.is_cuda else contextlib.nullcontext()
        inflight: Deque[Batch] = deque()
        with dev_ctx, torch.inference_mode():
            while True:
                try:
                    items = self._take(block=not inflight)
                    if not items and not inflight and not self._running:
                        break
                    for group in self._prepare(items):
                        # Never more batches in flight than the pipeline depth (the ring has
                        # one slot more): a take that splits into many size groups finishes
                        # the oldest batch before its slot could be reused.
                        while len(inflight) >= self._depth:
                            self._finish(inflight.popleft())
                        batch = self._launch(group)
                        if batch is not None:
                            inflight.append(batch)
                    while inflight and (len(inflight) >= self._depth or not items):
                        self._finish(inflight.popleft())
                except Exception:  # noqa: BLE001 - the worker must survive anything
                    log.exception("engine worker error (continuing)")
                    while inflight:
                        b = inflight.popleft()
                        self._fail(b.items, RuntimeError("batch lost after an engine error"))

    def _prepare(self, items: List[Item]) -> List[List[Item]]:
        """Validate / decode each frame (failures reported singly), then group the frames of the take by size.

        Frames of one size batch together even when cameras of other sizes came in between (groups
        in order of their first frame), without reordering any one source's frames.
        """
        ok: List[Item] = []
        for it in items:
            try:
                if it.data is not None:
                    decode_item(it, self._dev, max_pixels=self._cfg.max_pixels,
                                gpu_decode=self._gpu_decode, decode_s=self._streams.get("decode"),
                                on_gpu_failure=lambda exc: self._log_rate_limited(
                                    "gpu_decode", "GPU JPEG decode failed (%s); decoding on the CPU", exc))
                else:
                    it.shape = validate_frame(it.frame, self._cfg.max_pixels)
                    it.on_device = isinstance(it.frame, torch.Tensor) and it.frame.device.type != "cpu"
                ok.append(it)
            except Exception as exc:  # noqa: BLE001 - reported per frame
                self._fail([it], exc)
        groups: List[List[Item]] = []
        by_shape: Dict[Tuple[int, int], int] = {}   # shape -> index of its newest group
        last_of: Dict[str, int] = {}                # source -> index of its newest group
        for it in ok:
            g = by_shape.get(it.shape)
            # Joining an earlier group must not overtake a frame of the same source that sits
            # in a later group (a camera that changed size): each source keeps its order.
            if g is None or last_of.get(it.source_id, -1) > g:
                g = by_shape[it.shape] = len(groups)
                groups.append([])
            groups[g].append(it)
            last_of[it.source_id] = g
        return groups

    def _launch(self, group: List[Item]) -> Optional[Batch]:
        cfg, luts = self._cfg, self._luts
        try:
            wants = [it.outputs if it.outputs is not None else cfg.outputs for it in group]
            union: FrozenSet[str] = frozenset().union(*wants)
            h, w = group[0].shape
            out_size = (h, w) if cfg.output_resolution == "input" else self.seg.size_for((h, w))
            spec = ops.PostSpec(union - {"input"}, out_size, cfg.upsample, ops.alpha_weight(cfg.overlay_alpha))
            if self.fault_hook is not None and not self._warming:
                self.fault_hook(group)
            clock = StageClock(self._dev)
            clock.add("decode", sum(it.decode_ms for it in group))
            if self._use_ring:
                return self._pipe.launch(self.seg, group, spec, luts, clock, wants)
            with clock.stage("upload"):
                frames = self.seg.to_device_batch([it.frame for it in group], [it.bgr for it in group])
            out = self.seg.run_batch(frames, spec, luts, clock)
            if wants_device_input(group, wants):
                out["input"] = frames
            return Batch(group, out, clock, wants=wants)
        except Exception as exc:  # noqa: BLE001 - reported per frame
            if self._warming:
                raise
            if self._dev.is_cuda:
                # Work enqueued before the failure may still read this ring slot: let it drain
                # before the slot is reused.
                try:
                    torch.cuda.synchronize(self._dev.device)
                except Exception:  # noqa: BLE001 - a sticky CUDA error surfaces on the next batch
                    pass
            self._fail(group, exc)
            return None

    def _finish(self, batch: Batch) -> None:
        try:
            if batch.ready is not None:
                batch.ready.synchronize()
            stages = batch.clock.durations()
            if batch.slot is not None:
                # Pinned buffers are reused by a later batch: hand out copies.
                host = {k: ([np.array(v[j].numpy()) for j in range(len(batch.items))]
                            if isinstance(v, torch.Tensor) else list(v)) for k, v in batch.outputs.items()}
            else:
                t0 = time.perf_counter()
                host = to_numpy_outputs(batch.outputs, len(batch.items))
                if self._dev.is_cuda:
                    stages["download"] = stages.get("download", 0.0) + (time.perf_counter() - t0) * 1000.0
        except Exception as exc:  # noqa: BLE001 - reported per frame
            self._fail(batch.items, exc)
            return
        self._stage_window.add(stages)
        self._batch_sizes.append(len(batch.items))
        for j, it in enumerate(batch.items):
            try:
                result = self._result(batch, host, stages, j, it)
            except Exception as exc:  # noqa: BLE001 - every frame is accounted for
                self._fail([it], exc)
                continue
            self._deliver(it, result)

    @staticmethod
    def _result(batch: Batch, host: Dict[str, List[np.ndarray]], stages: Dict[str, float],
                j: int, it: Item) -> FrameResult:
        want = batch.wants[j]
        timings = dict(stages)
        timings["queue"] = (batch.t_launch - it.t_submit) * 1000.0
        timings["decode"] = it.decode_ms

        def pick(name: str) -> Optional[np.ndarray]:
            return host[name][j] if name in want and name in host else None

        if it.on_device:
            inp = host["input"][j] if "input" in want and "input" in host else None
        else:
            inp = rgb_view(it.frame, it.bgr)  # a view of the caller's array: free
        return FrameResult(
            stamp=it.stamp, source_id=it.source_id, context=it.context, labels=host["labels"][j],
            color=pick("color"), overlay=pick("overlay"), drivable=pick("drivable"),
            confidence=pick("confidence"), input=inp, timings=timings,
            latency_ms=(time.perf_counter() - it.t_submit) * 1000.0)

    def _deliver(self, it: Item, result: FrameResult) -> None:
        if self.on_result is not None:
            try:
                self.on_result(result)
            except Exception as exc:  # noqa: BLE001 - a user callback must not kill the worker
                with self._lock:
                    self._callback_errors += 1
                self._log_rate_limited("callback", "on_result raised %s", exc)
        with self._lock:
            src = self._source(it.source_id)
            for s in (src, self._total):
                s.processed += 1
                s.latency.add(result.latency_ms)
                s.done_times.append(time.perf_counter())
            self._done_one()

    def _done_one(self) -> None:  # lock held
        self._outstanding -= 1
        if self._outstanding <= 0:
            self._idle.notify_all()

    def _fail(self, items: Sequence[Item], exc: BaseException) -> None:
        kind = classify_error(exc)
        if kind == "oom" and self._dev.is_cuda:
            torch.cuda.empty_cache()
        self._log_rate_limited(kind, "frame dropped (%s): %s", kind, exc)
        for it in items:
            if self.on_error is not None:
                try:
                    self.on_error(FrameError(it.stamp, it.source_id, it.context, exc, kind))
                except Exception as cb_exc:  # noqa: BLE001
                    with self._lock:
                        self._callback_errors += 1
                    self._log_rate_limited("callback", "on_error raised %s", cb_exc)
            with self._lock:
                self._source(it.source_id).failed += 1
                self._total.failed += 1
                self._errors[kind] += 1
                self._done_one()

    def _log_rate_limited(self, key: str, msg: str, *args: Any) -> None:
        now = time.monotonic()
        with self._lock:
            last, suppressed = self._last_log.get(key, (-1e9, 0))
            if now - last < _LOG_EVERY_S:
                self._last_log[key] = (last, suppressed + 1)
                return
            self._last_log[key] = (now, 0)
        suffix = f" ({suppressed} similar messages suppressed)" if suppressed else ""
        log.warning(msg + suffix, *args)

    # ------------------------------------------------------------------ stats

    def stats(self) -> Dict[str, Any]:
        """Return a consistent snapshot of the counters, latency percentiles and stage means."""
        with self._lock:
            total = self._total.snapshot()
            per_source = {sid: s.snapshot() for sid, s in self._sources.items()}
            pending = len(self._slots) + len(self._fifo)
            errors = dict(self._errors)
            cb_errors = self._callback_errors
            sizes = list(self._batch_sizes)
        gpu_mb = None
        if self._dev.is_cuda:
            gpu_mb = round(torch.cuda.memory_reserved(self._dev.device) / 2 ** 20, 1)
        return {
            "processed": total["processed"], "dropped": total["dropped"], "failed": total["failed"],
            "submitted": total["submitted"], "pending": pending,
            "latency_ms": total["latency_ms"], "fps": total["fps"],
            "stages_ms": self._stage_window.means(), "per_source": per_source,
            "errors": errors, "callback_errors": cb_errors,
            "batch_mean": round(float(np.mean(sizes)), 2) if sizes else None,
            "device": str(self._dev.device), "backend": self.seg.backend,
            "precision": self.seg.precision, "gpu_memory_mb": gpu_mb,
            "cpu_threads": getattr(self.seg, "num_threads", None),
        }
