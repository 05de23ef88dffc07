"""CUDA pipeline of the engine (ROS-free).

The frame/batch records and the pinned ring that launches one batch over three streams.

Per batch, with ``pipeline_depth`` batches in flight (the ring has one slot more, and the engine
never keeps more than ``depth`` in flight, so a slot is never reused while its batch runs)::

    worker (CPU)     copy frames into a pinned ring slot
    copy stream      H2D (non_blocking) ---------- event "uploaded"
    compute stream        wait uploaded (+ each device frame's ready event) -> resize/normalize
                          -> forward -> upsample/argmax/colorize/blend --- event "computed"
    d2h stream                 wait computed -> D2H of the uint8 outputs into pinned memory
                                                   ---------- event "ready" (one per batch)
    worker (CPU)     (after launching the next batch) wait ready -> copy out -> on_result

On CPU the same code runs with no-op streams and wall-clock events (``timing.Device``).
"""

from __future__ import annotations

import time
from typing import Any, Dict, FrozenSet, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .timing import Device


class Item:
    """One submitted frame on its way through the engine."""

    __slots__ = ("frame", "data", "fmt", "stamp", "source_id", "context", "bgr", "outputs",
                 "t_submit", "shape", "decode_ms", "on_device", "frame_ready")

    def __init__(self, frame, data, fmt, stamp, source_id, context, bgr, outputs) -> None:
        self.frame, self.data, self.fmt = frame, data, fmt
        self.stamp, self.source_id, self.context = stamp, source_id, context
        self.bgr, self.outputs = bool(bgr), outputs
        self.t_submit = 0.0
        self.shape: Optional[Tuple[int, int]] = None
        self.decode_ms = 0.0
        self.on_device = False
        # CUDA event after which ``frame`` may be read (a caller's stream at submit time, or
        # the decode stream); None for host frames.
        self.frame_ready = None


class Batch:
    """A launched batch: its frames, outputs (device tensors / host buffers) and timing."""

    __slots__ = ("items", "outputs", "clock", "ready", "slot", "t_launch", "wants")

    def __init__(self, items, outputs, clock, ready=None, slot=None, wants=None) -> None:
        self.items, self.outputs, self.clock = items, outputs, clock
        self.ready, self.slot, self.wants = ready, slot, wants
        self.t_launch = time.perf_counter()


class RingSlot:
    """Pinned host and device buffers of one in-flight batch, reused round-robin."""

    def __init__(self, dev: Device) -> None:
        self.dev = dev
        self.uploaded = dev.event(timing=False)
        self.computed = dev.event(timing=False)
        self.ready = dev.event(timing=False, blocking=True)
        self.used = False
        self._host: Dict[Tuple, torch.Tensor] = {}
        self._device: Dict[Tuple, torch.Tensor] = {}

    def _buffer(self, cache: Dict, key: Tuple, shape: Tuple[int, ...], dtype, device, pin: bool) -> torch.Tensor:
        buf = cache.get(key)
        if buf is None or tuple(buf.shape) != shape:
            if len(cache) > 8:  # camera sizes changed a lot: do not hoard pinned memory
                cache.clear()
            buf = torch.empty(shape, dtype=dtype, device=device, pin_memory=pin)
            cache[key] = buf
        return buf

    def host(self, name: str, shape: Tuple[int, ...], dtype=torch.uint8) -> torch.Tensor:
        return self._buffer(self._host, (name,) + shape, shape, dtype, "cpu", self.dev.is_cuda)

    def device_in(self, shape: Tuple[int, ...]) -> torch.Tensor:
        return self._buffer(self._device, shape, shape, torch.uint8, self.dev.device, False)


def wants_device_input(group: Sequence[Item], wants: Sequence[FrozenSet[str]]) -> bool:
    return any(it.on_device and "input" in w for it, w in zip(group, wants))



class CudaPipeline:
    """Streams and ``depth + 1`` ring slots of pinned host / device buffers for one engine."""

    def __init__(self, dev: Device, depth: int, max_batch: int) -> None:
        self.dev = dev
        self.max_batch = max_batch
        self.streams: Dict[str, Any] = {}
        if dev.is_cuda:
            self.streams = {"copy": dev.stream(), "compute": dev.stream(), "d2h": dev.stream(),
                            "decode": dev.stream()}
        self.ring: List[RingSlot] = [RingSlot(dev) for _ in range(depth + 1)]
        self._pos = 0

    def launch(self, seg, group: Sequence[Item], spec, luts, clock, wants) -> Batch:
        """Launch one batch of same-size frames through the ring (see the module docstring).

        Returns at once with the batch's host buffers and its ``ready`` event.
        """
        dev, streams = self.dev, self.streams
        copy_s, compute_s, d2h_s = streams.get("copy"), streams.get("compute"), streams.get("d2h")
        slot = self.ring[self._pos % len(self.ring)]
        self._pos += 1
        if slot.used:
            # The worker keeps at most `depth` batches in flight and the ring has depth + 1
            # slots, so this slot's last batch has been finished (copied out) already; the
            # wait only guards the device-side reads of its buffers.
            slot.ready.synchronize()
        slot.used = True
        b = len(group)
        h, w = group[0].shape
        shape = (self.max_batch, h, w, 3)
        host_in = slot.host("input", shape)
        dev_in = slot.device_in(shape)
        host_rows = [j for j, it in enumerate(group) if not it.on_device]
        t0 = time.perf_counter()
        if host_rows:
            host_np = host_in.numpy()
            for j in host_rows:
                it = group[j]
                f = it.frame.numpy() if isinstance(it.frame, torch.Tensor) else it.frame
                np.copyto(host_np[j], f[..., ::-1] if it.bgr else f)
        clock.add("pin", (time.perf_counter() - t0) * 1000.0)
        with dev.use(copy_s):
            clock.begin("upload", copy_s)
            if len(host_rows) == b:
                dev_in[:b].copy_(host_in[:b], non_blocking=True)
            else:
                for j in host_rows:
                    dev_in[j].copy_(host_in[j], non_blocking=True)
            clock.end("upload", copy_s)
            slot.uploaded.record(copy_s)
        if compute_s is not None:
            dev.wait(compute_s, slot.uploaded)
            for it in group:
                if it.on_device and it.frame_ready is not None:
                    # device frames (decoded on the decode stream, or a caller's tensor, see
                    # submit()) are read on the compute stream: wait for them and tell the
                    # caching allocator, so their memory is not reused before the copy runs.
                    dev.wait(compute_s, it.frame_ready)
                    dev.record_stream(it.frame, compute_s)
        with dev.use(compute_s):
            for j, it in enumerate(group):
                if it.on_device:
                    dev_in[j].copy_(it.frame.flip(-1) if it.bgr else it.frame)
            frames = dev_in[:b]
            out = seg.run_batch(frames, spec, luts, clock)
            if wants_device_input(group, wants):
                out["input"] = frames  # decoded on the device: download it only when asked
            slot.computed.record(compute_s)
        host_out: Dict[str, Any] = {}
        with dev.use(d2h_s):
            if d2h_s is not None:
                dev.wait(d2h_s, slot.computed)
            clock.begin("download", d2h_s)
            for k, v in out.items():
                if not isinstance(v, torch.Tensor):  # numpy post-processing: already on the host
                    host_out[k] = v
                    continue
                buf = slot.host(k, (self.max_batch,) + tuple(v.shape[1:]), v.dtype)[:b]
                buf.copy_(v, non_blocking=True)
                dev.record_stream(v, d2h_s)
                host_out[k] = buf
            clock.end("download", d2h_s)
            ready = dev.event(timing=False, blocking=True)  # one per batch; the CPU sleeps on it
            ready.record(d2h_s)
            slot.ready = ready
        return Batch(group, host_out, clock, ready=ready, slot=slot, wants=wants)

