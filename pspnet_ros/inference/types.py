"""Engine configuration and the records it hands back (``FrameResult``, ``FrameError``).

Plain dataclasses with no torch import, so the ROS node and the bag tools can build configs and
fake results without loading the model stack.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, FrozenSet, Iterable, Mapping, Optional, Tuple

import numpy as np

#: Outputs the engine can produce per frame. ``labels`` is always produced.
OUTPUT_KINDS: Tuple[str, ...] = ("labels", "color", "overlay", "drivable", "confidence", "input")
DEFAULT_OUTPUTS: FrozenSet[str] = frozenset({"labels", "color", "overlay", "drivable"})
DROP_POLICIES = ("latest", "queue")
OUTPUT_RESOLUTIONS = ("input", "network")
UPSAMPLE_MODES = ("logits", "labels")
ERROR_KINDS = ("bad_input", "oom", "device_lost", "failed")
#: Encoded images whose header announces more pixels than this are refused before decoding.
DEFAULT_MAX_PIXELS = 50_000_000


def check_outputs(outputs: Iterable[str], what: str = "outputs") -> FrozenSet[str]:
    """Validate a set of output names; ``labels`` is always added (every result carries it)."""
    if isinstance(outputs, str):
        outputs = [o.strip() for o in outputs.split(",") if o.strip()]
    names = frozenset(outputs)
    unknown = sorted(names - set(OUTPUT_KINDS))
    if unknown:
        raise ValueError(f"{what}: unknown output(s) {', '.join(unknown)}; "
                         f"choose from {', '.join(OUTPUT_KINDS)}")
    return names | {"labels"}


def _choice(name: str, value: Any, choices: Tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


@dataclass(frozen=True)
class EngineConfig:
    """How a :class:`RealtimeEngine` schedules and post-processes frames.

    drop_policy: ``latest`` keeps one pending frame per source (a newer frame replaces it and
        the replaced one counts as dropped; ``submit`` never blocks) - for live cameras.
        ``queue`` keeps every frame in one bounded FIFO and ``submit`` blocks while it is full
        (back-pressure, nothing dropped) - for offline, deterministic processing.
    queue_size: capacity of the ``queue`` FIFO (all sources together).
    output_resolution: ``input`` (outputs at the submitted frame's size) or ``network`` (at the
        inference size).
    upsample: ``logits`` (bilinear on the class scores, then argmax: smooth boundaries) or
        ``labels`` (argmax at the inference size, then nearest: cheaper).
    overlay_alpha: weight of the class colour in the overlay (0 = frame only, 1 = colours only).
    drivable_classes: class names whose pixels are 255 in the drivable mask; ``None`` takes the
        checkpoint's ``drivable_classes``.
    outputs: which outputs to compute and download (``labels`` always; plus any of color,
        overlay, drivable, confidence, input).
    max_batch: most frames (of several sources, or consecutive queued frames) in one forward.
    compile / cuda_graphs: ``torch.compile`` the model / capture CUDA graphs per batch size;
        both warm up in ``start()`` and fall back to eager with a warning if they fail.
    pipeline_depth: batches in flight (upload of N+1 overlapping compute of N); ``None`` = 2 on
        CUDA, 1 on CPU.
    max_pixels: encoded frames announcing more pixels are refused before decoding (bombs).
    gpu_decode: decode JPEG on the GPU (nvJPEG) when the engine runs on CUDA.
    warmup: in ``start()``, run the network once per batch size (cuDNN autotuning, allocator)
        and dummy frames through the whole pipeline once per ring slot (pinned buffers,
        pre/post-processing), so the first real frame is not slow.
    latency_window: how many recent frames the latency percentiles cover.
    """

    drop_policy: str = "latest"
    queue_size: int = 8
    output_resolution: str = "input"
    upsample: str = "logits"
    overlay_alpha: float = 0.5
    drivable_classes: Optional[Tuple[str, ...]] = ("road",)
    outputs: FrozenSet[str] = DEFAULT_OUTPUTS
    max_batch: int = 4
    compile: bool = False
    cuda_graphs: bool = False
    pipeline_depth: Optional[int] = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    gpu_decode: bool = True
    warmup: bool = True
    latency_window: int = 1000

    def __post_init__(self) -> None:
        _choice("drop_policy", self.drop_policy, DROP_POLICIES)
        _choice("output_resolution", self.output_resolution, OUTPUT_RESOLUTIONS)
        _choice("upsample", self.upsample, UPSAMPLE_MODES)
        for name in ("queue_size", "max_batch", "max_pixels", "latency_window"):
            _positive_int(name, getattr(self, name))
        if self.pipeline_depth is not None:
            _positive_int("pipeline_depth", self.pipeline_depth)
        alpha = self.overlay_alpha
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
            raise ValueError(f"overlay_alpha must be a number in [0, 1], got {alpha!r}")
        object.__setattr__(self, "overlay_alpha", float(alpha))
        if self.drivable_classes is not None:
            names = self.drivable_classes
            if isinstance(names, str):
                names = [n.strip() for n in names.split(",") if n.strip()]
            names = tuple(names)
            if not all(isinstance(n, str) and n for n in names):
                raise ValueError(f"drivable_classes must be class names, got {self.drivable_classes!r}")
            object.__setattr__(self, "drivable_classes", names)
        object.__setattr__(self, "outputs", check_outputs(self.outputs))
        for name in ("compile", "cuda_graphs", "gpu_decode", "warmup"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "EngineConfig":
        """Build from a mapping (YAML, ROS parameters); unknown keys raise, ``None`` = default."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown engine setting(s) {', '.join(unknown)}; "
                             f"known: {', '.join(sorted(known))}")
        return cls(**{k: v for k, v in values.items() if v is not None})

    def replace(self, **changes: Any) -> "EngineConfig":
        return dataclasses.replace(self, **changes)


@dataclass
class FrameResult:
    """One segmented frame. Arrays are numpy, owned by the receiver (never reused by the engine).

    labels: (H, W) uint8 class indices. color: (H, W, 3) uint8 RGB palette image. overlay:
    (H, W, 3) uint8 RGB frame blended with ``color``. drivable: (H, W) uint8, 255 on drivable
    classes, else 0. confidence: (H, W) uint8, max softmax probability * 255. input: the RGB
    (H, W, 3) uint8 frame that was segmented (a view when the frame was submitted as an array).
    probs: (K, H, W) float32 class probabilities (``Segmenter.predict(return_probs=True)`` only).
    H, W are the submitted frame's size (``output_resolution="input"``) or the inference size.
    timings: per-stage milliseconds of the batch this frame was in (``queue`` and ``decode``
    are this frame's own). latency_ms: submit -> result.
    """

    stamp: Any
    source_id: str
    context: Any
    labels: np.ndarray
    color: Optional[np.ndarray] = None
    overlay: Optional[np.ndarray] = None
    drivable: Optional[np.ndarray] = None
    confidence: Optional[np.ndarray] = None
    input: Optional[np.ndarray] = None
    timings: Dict[str, float] = field(default_factory=dict)
    latency_ms: float = 0.0
    probs: Optional[np.ndarray] = None


@dataclass
class FrameError:
    """A frame that produced no result.

    kind: ``bad_input`` (the frame or its encoding is invalid), ``oom`` (out of device memory; the
    cache was cleared), ``device_lost`` (a sticky CUDA error: the context is unusable, every later
    frame fails too), ``failed`` (anything else).
    """

    stamp: Any
    source_id: str
    context: Any
    error: BaseException
    kind: str

    @property
    def message(self) -> str:
        return f"{type(self.error).__name__}: {self.error}"
