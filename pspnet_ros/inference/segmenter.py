"""``Segmenter``: a loaded model plus everything needed to turn uint8 frames into outputs.

Class names, palette, mean/std and the inference size come from the checkpoint metadata. The
tensor work (resize, normalize, forward, upsample, argmax, colorize, blend) is the same code on
CUDA and CPU; see :mod:`.ops`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections import OrderedDict
import time
import warnings
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch
from torch import nn

from ..errors import InputError
from ..models import load_model, validate_meta
from ..paths import resolve_device
from . import int8_check, ops
from .inputs import validate_frame
from .int8 import Int8Unavailable, accuracy_holds, load_int8
from .runners import OpenVinoRunner, OrtRunner, TorchRunner, fp32_onnx
from .sizing import auto_inference_size, parse_inference_size
from .timing import StageClock
from .types import DEFAULT_MAX_PIXELS, FrameResult, check_outputs

log = logging.getLogger(__name__)

Size = Tuple[int, int]
PREDICT_OUTPUTS = frozenset({"labels", "confidence", "color", "overlay", "drivable"})
BACKENDS = ("auto", "torch", "onnxruntime", "openvino")
PRECISIONS = ("auto", "fp32", "fp16", "bf16", "int8")
#: backend ``auto`` on CPU, per precision, fastest first (``pspnet bench --compare`` and
#: benchmarks/ros_bench.py on the 2-core development CPU, 2026-12-02, README "CPU backends"): int8
#: OpenVINO (a near tie: ahead in 3 of 5 engine runs and at batch 1, node p50 47 vs 51 ms at
#: 10 Hz), fp32 ONNX Runtime (ahead in 4 of 5). The first one installed that builds is used.
CPU_BACKEND_ORDER = {"fp32": ("onnxruntime", "openvino", "torch"), "int8": ("openvino", "onnxruntime"),
                     "bf16": ("torch",), "fp16": ("torch",)}
#: Inference sizes kept ready at once (ONNX/OpenVINO models are per size): a node with a few
#: cameras of different aspect ratios keeps all of them; a stream of ever new sizes evicts the
#: least recently used instead of growing without bound.
MAX_SIZES = 4
#: With ``auto``, at most MAX_SIZES new sizes are built per this many seconds: a stream of frames
#: of ever new shapes (a broken driver, a hostile publisher) would otherwise cost an ONNX export
#: and compile (seconds) per frame. Frames needing one more are refused with an InputError.
SIZE_BUILD_WINDOW_S = 60.0


def parse_size(value: Any, what: str = "inference_size") -> Size:
    """(h, w) from a pair or an 'HxW' string; positive ints."""
    if isinstance(value, str):
        parts = value.lower().replace(",", "x").split("x")
        try:
            value = tuple(int(p) for p in parts)
        except ValueError:
            raise ValueError(f"{what} must look like HxW (e.g. 188x621), got {value!r}") from None
    try:
        h, w = (int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be (height, width), got {value!r}") from None
    if h < 1 or w < 1:
        raise ValueError(f"{what} must be positive, got {(h, w)}")
    return h, w


def _installed(backend: str) -> bool:
    if backend == "torch":
        return True
    import importlib.util

    return importlib.util.find_spec(backend) is not None


def stack_frames(frames: Sequence[Any], bgr: Sequence[bool], out: Optional[np.ndarray] = None) -> np.ndarray:
    """Copy same-size HxWx3 uint8 frames into one (B, H, W, 3) RGB array.

    BGR ones are reversed during the copy, so it costs nothing extra.
    """
    h, w = frames[0].shape[:2]
    if out is None:
        out = np.empty((len(frames), h, w, 3), np.uint8)
    for i, (f, is_bgr) in enumerate(zip(frames, bgr)):
        f = f.numpy() if isinstance(f, torch.Tensor) else f
        if is_bgr and f.dtype == np.uint8 and f.flags.c_contiguous:
            cv2.cvtColor(f, cv2.COLOR_BGR2RGB, dst=out[i])  # ~5x faster than a reversed-stride copy
        else:
            np.copyto(out[i], f[..., ::-1] if is_bgr else f)
    return out


def rgb_view(frame: Any, bgr: bool) -> np.ndarray:
    """Return the RGB frame as a numpy view (no copy; reversed strides for BGR)."""
    if isinstance(frame, torch.Tensor):
        frame = frame.cpu().numpy()
    return frame[..., ::-1] if bgr else frame


class Segmenter:
    """A segmentation model ready for inference.

    Attributes: ``meta`` (checkpoint metadata), ``classes`` (list of names), ``palette``
    ((K, 3) uint8), ``device`` (torch.device), ``inference_size`` ((h, w): the fixed size, or
    with ``auto`` the model's own size), ``auto_size`` (bool), ``model_name``,
    ``precision`` (resolved: fp32/fp16/bf16/int8), ``backend`` (``torch``, ``onnxruntime`` or
    ``openvino``), ``num_threads`` (CPU intra-op), ``int8_record`` (the INT8 model's
    quantization record, see :mod:`.int8`). ``cache_key`` identifies the weights
    (``from_checkpoint`` passes the file's path, mtime and size) so an ONNX export is reused
    within the process.

    inference_size ``None``/``"auto"``: each frame runs at its own aspect ratio under the model's
    pixel budget (:func:`.sizing.auto_inference_size`: the model's own size for its own
    camera); ``(h, w)`` or ``"HxW"`` fixes it. Runners (ONNX/OpenVINO graphs) are built per
    size on first use, at most ``MAX_SIZES`` kept; ``size_for(frame_hw)`` says which size a
    frame gets, ``sizes()`` what each ready size runs (precision, backend).

    precision ``auto``: on CPU INT8 when the checkpoint's ``.int8.onnx`` exists, belongs to these
    weights and size, and passed its accuracy check; fp32 otherwise (``precision_note`` says
    why). On CUDA fp32. ``int8`` insists (raises :class:`Int8Unavailable` with the fix).
    backend ``auto``: on CPU the fastest installed runtime for the precision
    (``CPU_BACKEND_ORDER``, measured), falling back along that order; PyTorch on CUDA.
    channels_last ``None``: on for CUDA (tensor cores want NHWC), off on CPU (measured: no gain
    for the MobileNetV3 model, 57.4 vs 58.4 ms per 188x621 frame).
    num_threads: CPU intra-op threads; ``None`` keeps torch's setting (all physical cores by
    default, ``OMP_NUM_THREADS`` if set). Setting it calls ``torch.set_num_threads``, which is
    process-wide.
    """

    def __init__(self, model: nn.Module, meta: Mapping[str, Any], *, device: Union[str, torch.device] = "auto",
                 precision: str = "fp32", inference_size: Optional[Any] = None, backend: str = "auto",
                 channels_last: Optional[bool] = None, num_threads: Optional[int] = None,
                 name: Optional[str] = None, ops_impl: Optional[str] = None,
                 cache_key: Optional[Tuple] = None, checkpoint_path: Optional[Union[str, os.PathLike]] = None,
                 int8_model: Optional[Union[str, os.PathLike]] = None, max_batch: int = 8) -> None:
        validate_meta(meta)
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        self.device = torch.device(resolve_device(str(device)))
        self.meta: Dict[str, Any] = dict(meta)
        self.classes: List[str] = [str(c) for c in meta["classes"]]
        self.palette = np.asarray(meta["palette"], dtype=np.uint8).reshape(-1, 3)
        fixed = parse_inference_size(inference_size)
        self.model_size: Optional[Size] = parse_size(meta["input_size"]) if meta.get("input_size") else None
        if fixed is None and self.model_size is None:
            raise ValueError("the checkpoint metadata has no input_size; pass inference_size=(h, w)")
        self.auto_size = fixed is None
        self.inference_size: Size = fixed or self.model_size  # type: ignore[assignment]
        self.model_name = name or str(meta.get("name")
                                      or f"{meta['arch']}_{meta['arch_kwargs'].get('backbone', '')}".rstrip("_"))
        if num_threads is not None:
            if int(num_threads) < 1:
                raise ValueError(f"num_threads must be >= 1, got {num_threads!r}")
            torch.set_num_threads(int(num_threads))
        self.num_threads = torch.get_num_threads()
        self.is_cuda = self.device.type == "cuda"
        self.channels_last = self.is_cuda if channels_last is None else bool(channels_last)
        self.ops_impl = ops_impl or ("torch" if self.is_cuda else "numpy")
        if self.ops_impl not in ("torch", "numpy") or (self.ops_impl == "numpy" and self.is_cuda):
            raise ValueError(f"ops_impl must be 'torch' (any device) or 'numpy' (CPU), got {self.ops_impl!r}")
        self.num_parameters = sum(p.numel() for p in model.parameters())

        mean = torch.tensor(meta["mean"], dtype=torch.float32).view(1, 3, 1, 1) * 255.0
        std = torch.tensor(meta["std"], dtype=torch.float32).view(1, 3, 1, 1) * 255.0
        self._mean255 = mean.to(self.device)
        self._inv_std255 = (1.0 / std).to(self.device)
        self._mean255_np = mean.flatten().numpy().astype(np.float32)
        self._inv_std255_np = (1.0 / std).flatten().numpy().astype(np.float32)
        self._luts: Dict[Tuple[int, ...], ops.Luts] = {}
        self._lock = threading.RLock()  # one forward at a time (CUDA graphs share buffers)

        self.model = model.eval()
        #: The last INT8 self-check's result (:func:`.int8_check.self_check`), None where none ran.
        self.int8_self_check: Optional[Dict[str, Any]] = None
        self._requested = (precision, backend, cache_key, max_batch, checkpoint_path, int8_model)
        self._by_size: "OrderedDict[Size, _SizeRun]" = OrderedDict()
        self._builds: List[float] = []  # monotonic times of recent size builds (auto)
        first = self._size_run(self.inference_size)
        self.runner: Union[TorchRunner, OrtRunner, OpenVinoRunner] = first.runner
        self.precision, self.backend = first.precision, first.runner.name
        self.precision_note, self.int8_record = first.note, first.int8_record

    def size_for(self, frame_hw: Sequence[int]) -> Size:
        """Return the inference (h, w) a frame of ``frame_hw`` runs at."""
        if not self.auto_size:
            return self.inference_size
        return auto_inference_size(frame_hw, self.model_size)

    def sizes(self) -> Dict[str, Dict[str, str]]:
        """{"HxW": {"precision", "backend", "note"}} for each size ready now (most recent last)."""
        with self._lock:
            return {f"{h}x{w}": {"precision": r.precision, "backend": r.runner.name, "note": r.note}
                    for (h, w), r in self._by_size.items()}

    def _size_run(self, size: Size) -> "_SizeRun":
        """Return the runner of ``size`` (built on first use; least recently used evicted past MAX_SIZES)."""
        with self._lock:
            run = self._by_size.get(size)
            if run is not None:
                self._by_size.move_to_end(size)
                return run
            precision, backend, cache_key, max_batch, checkpoint_path, int8_model = self._requested
            now = time.monotonic()
            self._builds = [t for t in self._builds if now - t < SIZE_BUILD_WINDOW_S]
            if self._by_size and len(self._builds) >= MAX_SIZES:
                raise InputError(f"inference size {size[0]}x{size[1]} refused: {len(self._builds)} new sizes "
                                 f"in the last {SIZE_BUILD_WINDOW_S:.0f} s (frames keep changing shape); "
                                 "set inference_size to a fixed [height, width] for such a source")
            self._builds.append(now)
            t0 = time.perf_counter()
            note = ""
            resolved, int8_bytes, note, record = self._resolve_precision(precision, checkpoint_path,
                                                                         int8_model, size, backend)
            shared = next((r.runner for r in self._by_size.values()
                           if isinstance(r.runner, TorchRunner) and r.precision == resolved), None)
            if shared is not None and backend in ("auto", "torch") and (self.is_cuda or backend == "torch"):
                runner = shared  # PyTorch runs every size with one module
            else:
                runner = self._build_runner(backend, cache_key, max_batch, int8_bytes, size, resolved)
            if precision == "auto" and resolved == "int8":
                holds, note = self._int8_holds_here(runner, record, note, checkpoint_path, int8_bytes, size)
                if not holds:
                    resolved, record = "fp32", None
                    runner = self._build_runner(backend, cache_key, max_batch, None, size, resolved)
            run = _SizeRun(resolved, runner, note, record)
            self._by_size[size] = run
            while len(self._by_size) > MAX_SIZES:
                old, _ = self._by_size.popitem(last=False)
                log.info("inference size %dx%d evicted (more than %d sizes in use)", old[0], old[1], MAX_SIZES)
            if self._by_size and len(self._by_size) > 1:
                log.info("inference size %dx%d ready: %s on %s in %.1f s", size[0], size[1], resolved,
                         runner.name, time.perf_counter() - t0)
            return run

    def _resolve_precision(self, precision: str, checkpoint_path, int8_model, size: Size,
                           backend: str = "auto") -> Tuple[str, Optional[bytes], str, Optional[Dict[str, Any]]]:
        """Return (precision, INT8 model bytes or None, note, INT8 record or None) for ``size``.

        ``auto``: INT8 on CPU when the checkpoint's INT8 model for this size exists and passed its
        check, else fp32. With ``backend: torch`` (which has no INT8 path) ``auto`` is fp32.
        """
        if precision == "auto" and backend == "torch":
            return "fp32", None, "auto: fp32 (backend torch runs no INT8; INT8 runs on onnxruntime/openvino)", None
        if precision in ("auto", "int8") and not self.is_cuda:
            try:
                if checkpoint_path is None:
                    raise Int8Unavailable("no checkpoint file to find the INT8 model of (use from_checkpoint)")
                data, record = load_int8(checkpoint_path, size, path=int8_model)
                holds, why = accuracy_holds(record)
                if precision == "auto" and not holds:
                    raise Int8Unavailable(f"{Path(int8_model or checkpoint_path).name}: {why}")
            except Int8Unavailable as exc:
                if precision == "int8":
                    raise
                note = f"auto: no INT8 ({exc})"
                if getattr(exc, "stale", False) or int8_model is not None:
                    # The INT8 file is there but does not fit (retrained weights, other size, failed
                    # check): fp32 runs 3-5x slower on CPU until it is re-made; say so loudly.
                    log.warning("precision fp32 at %dx%d (3-5x slower than INT8 on CPU): %s", size[0], size[1],
                                note)
                else:
                    log.info("precision fp32 at %dx%d, %s", size[0], size[1], note)
                return "fp32", None, note, None
            return "int8", data, (f"auto: {why}" if precision == "auto" else ""), record
        if precision == "int8":
            raise ValueError("precision int8 runs on CPU backends (onnxruntime, openvino), not on "
                             f"{self.device}; use fp16/bf16 on CUDA")
        return ("fp32" if precision == "auto" else precision), None, "", None

    def _int8_holds_here(self, runner, record: Optional[Dict[str, Any]], note: str, checkpoint_path,
                         int8_bytes: Optional[bytes], size: Size) -> Tuple[bool, str]:
        """``auto`` picked INT8: is it known to hold on this CPU and backend? Return (holds, note).

        See :mod:`.int8_check`: the record's check covers this CPU class and backend, or the
        cached self-check on the sample frames passes; else fp32 with a WARNING naming the fix.
        """
        record = record or {}
        backend = runner.name
        covered, why = int8_check.checked_here(record, backend)
        isa = int8_check.int8_isa()
        if covered:
            return True, f"{note}; checked on a {isa} CPU with {backend}"
        fix = f"pspnet quantize --checkpoint {checkpoint_path} --size {size[0]}x{size[1]}"
        ref = (((record.get("accuracy") or {}).get("backends") or {}).get(backend) or {}).get("self_check")
        try:
            fp32 = TorchRunner(self.model, self.device, "fp32", False)
            with torch.inference_mode():
                res = int8_check.self_check(
                    hashlib.sha256(int8_bytes or b"").hexdigest(), backend, size,
                    lambda x: fp32(torch.from_numpy(x)).float().numpy(),
                    lambda x: runner(torch.from_numpy(x)).float().numpy(),
                    lambda: int8_check.sample_inputs(self.meta["mean"], self.meta["std"], size), ref)
        except Exception as exc:  # noqa: BLE001 - cannot check: do not trust INT8 here
            log.warning("precision fp32 (3-5x slower than INT8 on CPU): INT8 is unchecked on this %s CPU (%s) and "
                        "its self-check failed to run (%s: %s); fix: %s on this machine", isa, why,
                        type(exc).__name__, exc, fix)
            return False, f"auto: no INT8 (unchecked on this {isa} CPU: {why})"
        self.int8_self_check = res
        detail = (f"self-check{' (cached)' if res['cached'] else ''} on {res['frames']} sample frames with "
                  f"{backend}: {100 * res['agreement']:.2f}% of labels equal fp32 (needs {100 * res['required']:.2f}%)"
                  + ("" if res.get("max_logit_error") is None else
                     f", logit error {res['logit_error']:.4f} (at most {res['max_logit_error']:.4f})"))
        if res["passed"]:
            log.info("INT8 holds on this %s CPU: %s", isa, detail)
            return True, f"{note}; {why}, {detail}"
        log.warning("precision fp32 (3-5x slower than INT8 on CPU): the INT8 model does not hold on this %s CPU "
                    "(%s; %s); fix: %s on this machine (7-bit weights, the default, avoid the int16 saturation "
                    "of CPUs without VNNI)", isa, why, detail, fix)
        return False, f"auto: no INT8 (fails on this {isa} CPU: {detail})"

    def _build_runner(self, backend: str, cache_key: Optional[Tuple], max_batch: int,
                      int8_bytes: Optional[bytes], size: Size, precision: str):
        if backend == "auto":
            order = ("torch",) if self.is_cuda else CPU_BACKEND_ORDER[precision]
            order = tuple(b for b in order if _installed(b))
            if not order:
                raise ValueError(f"precision {precision} on CPU needs onnxruntime or openvino (pip install "
                                 "onnxruntime)")
        else:
            order = (backend,)
        if backend in ("onnxruntime", "openvino"):
            if self.is_cuda:
                raise ValueError(f"backend {backend} runs on CPU only (device {self.device})")
            if precision not in (("fp32", "int8") if backend == "onnxruntime" else ("fp32", "int8", "bf16")):
                raise ValueError(f"backend {backend} does not run precision {precision}")
        if backend == "torch" and precision == "int8":
            raise ValueError("precision int8 needs backend onnxruntime or openvino (or auto), not torch")
        for i, name in enumerate(order):
            try:
                if name == "torch":
                    return TorchRunner(self.model, self.device, precision, self.channels_last)
                data = int8_bytes if precision == "int8" else fp32_onnx(
                    self.model, size, cache_key=cache_key)
                if name == "onnxruntime":
                    return OrtRunner(data, size, self.num_threads, precision)
                return OpenVinoRunner(data, size, self.num_threads, precision, max_batch=max_batch)
            except Exception as exc:  # noqa: BLE001 - auto: any export/runtime problem, try the next backend
                if backend != "auto" or i == len(order) - 1:
                    raise
                log.warning("backend %s unavailable (%s: %s); trying %s", name, type(exc).__name__,
                            str(exc).splitlines()[0] if str(exc) else "", order[i + 1])
        raise AssertionError("unreachable")

    @classmethod
    def from_checkpoint(cls, path: Union[str, os.PathLike], device: Union[str, torch.device] = "auto",
                        precision: str = "fp32", inference_size: Optional[Any] = None,
                        **kwargs: Any) -> "Segmenter":
        """Load a checkpoint (see :func:`pspnet_ros.models.load_model`).

        ``kwargs`` as for the constructor (backend, channels_last, num_threads, name).
        """
        dev = resolve_device(str(device))
        model, meta = load_model(path, "cpu")
        kwargs.setdefault("name", Path(path).stem)
        st = Path(path).stat()
        kwargs.setdefault("cache_key", (str(Path(path).resolve()), st.st_mtime_ns, st.st_size))
        kwargs.setdefault("checkpoint_path", path)
        return cls(model, meta, device=dev, precision=precision, inference_size=inference_size, **kwargs)

    # ------------------------------------------------------------------ metadata helpers

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def describe(self) -> Dict[str, Any]:
        kw = self.meta.get("arch_kwargs", {})
        return {"name": self.model_name, "arch": self.meta.get("arch"), "backbone": kw.get("backbone"),
                "dataset": self.meta.get("dataset"), "classes": self.classes,
                "input_size": list(self.inference_size), "parameters": self.num_parameters,
                "inference_size": "auto" if self.auto_size else "x".join(map(str, self.inference_size)),
                "sizes": self.sizes(),
                "backend": self.backend, "precision": self.precision, "device": str(self.device),
                "precision_note": self.precision_note,
                "channels_last": self.channels_last, "cpu_threads": self.num_threads}

    def drivable_ids(self, names: Optional[Iterable[str]] = None) -> Tuple[int, ...]:
        """Class indices for drivable class names (``None``: the checkpoint's drivable_classes)."""
        if names is None:
            names = self.meta.get("drivable_classes") or ()
        names = list(names)
        unknown = [n for n in names if n not in self.classes]
        if unknown:
            raise ValueError(f"drivable class(es) {', '.join(map(repr, unknown))} not in the model's "
                             f"classes ({', '.join(self.classes)})")
        return tuple(sorted(self.classes.index(n) for n in names))

    def luts(self, drivable_ids: Tuple[int, ...]) -> ops.Luts:
        luts = self._luts.get(drivable_ids)
        if luts is None:
            luts = self._luts[drivable_ids] = ops.Luts(self.palette, drivable_ids, self.device)
        return luts

    # ------------------------------------------------------------------ running

    def prepare(self, max_batch: int = 1, *,
                compile: bool = False,  # noqa: A002 (public keyword argument, callers pass compile=)
                cuda_graphs: bool = False, warmup: bool = True) -> None:
        """Compile / capture / warm up the network for batch sizes 1..max_batch."""
        with self._lock, torch.inference_mode():
            self.runner.prepare(range(1, max_batch + 1), self.inference_size, compile=compile,
                                cuda_graphs=cuda_graphs, warmup=warmup)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map normalized (B, 3, h, w) float at an inference size to (B, K, h, w) logits."""
        with self._lock:
            return self._size_run((int(x.shape[-2]), int(x.shape[-1]))).runner(x)

    def run_batch(self, frames: torch.Tensor, spec: ops.PostSpec, luts: ops.Luts,
                  clock: Optional[StageClock] = None) -> Dict[str, Any]:
        """(B, H, W, 3) uint8 RGB frames on ``self.device`` -> outputs (see ops.postprocess).

        Runs on the current CUDA stream; marks preprocess/inference/postprocess on ``clock``.
        """
        frame_size = tuple(frames.shape[1:3])
        size = self.size_for(frame_size)
        out_size = tuple(spec.out_size)
        need_small_rgb = "overlay" in spec.outputs and out_size != frame_size
        if need_small_rgb and out_size != size:
            raise ValueError(f"output size {out_size} must be the frame size {frame_size} or the "
                             f"inference size {size}")
        with torch.inference_mode():
            if clock:
                clock.begin("preprocess")
            if self.ops_impl == "numpy":
                x, small = ops.preprocess_np(frames.numpy(), size, self._mean255_np, self._inv_std255_np,
                                             keep_resized=need_small_rgb)
            else:
                x, small = ops.preprocess(frames, size, self._mean255, self._inv_std255,
                                          channels_last=self.channels_last, keep_resized=need_small_rgb)
            if clock:
                clock.end("preprocess")
                clock.begin("inference")
            logits = self.forward(x)
            if clock:
                clock.end("inference")
                clock.begin("postprocess")
            rgb = small if need_small_rgb else frames
            out = ops.postprocess(logits, rgb, spec, luts, impl=self.ops_impl)
            if clock:
                clock.end("postprocess")
        return out

    def to_device_batch(self, frames: Sequence[Any], bgr: Sequence[bool]) -> torch.Tensor:
        """Same-size frames (numpy or tensors) -> (B, H, W, 3) uint8 RGB tensor on the device."""
        if all(isinstance(f, torch.Tensor) and f.device == self.device for f in frames):
            ts = [f.flip(-1) if b else f for f, b in zip(frames, bgr)]
            return torch.stack(ts) if len(ts) > 1 else ts[0].unsqueeze(0)
        if len(frames) == 1 and not bgr[0] and isinstance(frames[0], np.ndarray) \
                and frames[0].flags.c_contiguous:
            with warnings.catch_warnings():
                # Read-only arrays (ROS message buffers, PIL images) are fine: nothing writes
                # to the input batch.
                warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
                batch = torch.from_numpy(frames[0]).unsqueeze(0)  # zero-copy
        else:
            batch = torch.from_numpy(stack_frames([f.cpu() if isinstance(f, torch.Tensor) else f
                                                   for f in frames], bgr))
        return batch.to(self.device)

    def predict(self, frames: Any, bgr: Union[bool, Sequence[bool]] = False, return_probs: bool = False, *,
                outputs: Optional[Iterable[str]] = None, output_resolution: str = "input",
                upsample: str = "logits", overlay_alpha: float = 0.5,
                drivable_classes: Optional[Iterable[str]] = None, max_batch: int = 8,
                max_pixels: int = DEFAULT_MAX_PIXELS) -> List[FrameResult]:
        """Predict synchronously for one HxWx3 uint8 frame or a list of them.

        Returns one FrameResult per frame, in order (``stamp=None``, ``source_id='default'``),
        with labels, confidence, color, overlay and drivable (``outputs`` selects), and
        ``probs`` ((K, H, W) float32) when ``return_probs``. Consecutive frames of one size are
        batched (up to ``max_batch``). Bad frames raise InputError.
        """
        single = isinstance(frames, (np.ndarray, torch.Tensor))
        frames = [frames] if single else list(frames)
        if not frames:
            return []
        flags = [bool(bgr)] * len(frames) if isinstance(bgr, (bool, np.bool_)) else [bool(b) for b in bgr]
        if len(flags) != len(frames):
            raise ValueError(f"got {len(flags)} bgr flags for {len(frames)} frames")
        want = check_outputs(PREDICT_OUTPUTS if outputs is None else outputs, "predict outputs")
        if return_probs:
            want = want | {"probs"}
        if output_resolution not in ("input", "network"):
            raise ValueError(f"output_resolution must be input or network, got {output_resolution!r}")
        if upsample not in ("logits", "labels"):
            raise ValueError(f"upsample must be logits or labels, got {upsample!r}")
        # A drivable class name the model lacks only matters when the mask is asked for.
        luts = self.luts(self.drivable_ids(drivable_classes) if "drivable" in want else ())
        sizes = [validate_frame(f, max_pixels) for f in frames]
        results: List[FrameResult] = []
        start = 0
        while start < len(frames):
            end = start + 1
            while end < len(frames) and end - start < max_batch and sizes[end] == sizes[start]:
                end += 1
            t0 = time.perf_counter()
            batch = self.to_device_batch(frames[start:end], flags[start:end])
            out_size = sizes[start] if output_resolution == "input" else self.size_for(sizes[start])
            spec = ops.PostSpec(frozenset(want), out_size, upsample, ops.alpha_weight(overlay_alpha))
            out = self.run_batch(batch, spec, luts)
            host = to_numpy_outputs(out, end - start)
            ms = (time.perf_counter() - t0) * 1000.0
            for j in range(end - start):
                i = start + j
                results.append(FrameResult(
                    stamp=None, source_id="default", context=None, labels=host["labels"][j],
                    color=_get(host, "color", j), overlay=_get(host, "overlay", j),
                    drivable=_get(host, "drivable", j), confidence=_get(host, "confidence", j),
                    input=rgb_view(frames[i], flags[i]) if output_resolution == "input"
                    else None, timings={"total": ms}, latency_ms=ms, probs=_get(host, "probs", j)))
            start = end
        return results


class _SizeRun:
    """What one inference size runs: precision, runner, why (``note``), INT8 record."""

    __slots__ = ("precision", "runner", "note", "int8_record")

    def __init__(self, precision: str, runner: Any, note: str, int8_record: Optional[Dict[str, Any]]) -> None:
        self.precision, self.runner, self.note, self.int8_record = precision, runner, note, int8_record


def _get(host: Mapping[str, Any], key: str, j: int) -> Optional[np.ndarray]:
    v = host.get(key)
    return None if v is None else v[j]


def to_numpy_outputs(out: Mapping[str, Any], batch: int) -> Dict[str, List[np.ndarray]]:
    """Device tensors or per-frame numpy lists -> per-frame numpy lists (copies from devices)."""
    host: Dict[str, List[np.ndarray]] = {}
    for k, v in out.items():
        if isinstance(v, torch.Tensor):
            arr = v.detach().cpu().numpy()
            host[k] = [arr[j] for j in range(batch)]
        else:
            host[k] = list(v)
    return host


__all__ = ["Segmenter", "InputError", "parse_size", "stack_frames", "rgb_view", "to_numpy_outputs"]
