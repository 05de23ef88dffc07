"""Does an INT8 model hold on *this* CPU? CPU features, and the cached start-up self-check.

INT8 accuracy depends on the CPU. With VNNI (AVX512-VNNI, AVX-VNNI, AMX) a uint8 x int8 dot
product accumulates exactly in int32. Without it (AVX2 only: most AMD Zen 2/3, many NUCs and
laptops) ONNX Runtime and OpenVINO use ``vpmaddubsw``, which adds two products in int16 and
saturates: an 8-bit-weight model can lose several mIoU points there. ``pspnet quantize`` therefore
writes 7-bit weights by default, and records the CPU class its accuracy check ran on.

``precision: auto`` takes INT8 without further ado where the record's accuracy check ran on the
same CPU class (:func:`int8_isa`) and backend. Elsewhere it runs a short self-check once: the
bundled sample frames (``data/sample/kitti_road``) through the INT8 runner and the fp32 model.
Against the reference the record measured on its check CPU, the INT8 logits may differ from fp32 by
at most :data:`SELF_CHECK_ERROR_FACTOR` times the reference's relative error (the int16 saturation
of an 8-bit-weight model without VNNI doubles it; label agreement alone hides it behind the few
pixels near a class boundary), and the labels must agree on at least the reference's share minus
:data:`SELF_CHECK_SLACK` (:data:`SELF_CHECK_MIN` for a record without a reference). The result
is cached per INT8 graph, backend, runtime version and CPU in ``$XDG_CACHE_HOME/pspnet_ros``
(``~/.cache/pspnet_ros``), so later starts cost nothing.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import platform
from pathlib import Path
from typing import Any, Callable, Dict, FrozenSet, List, Mapping, Optional, Sequence, Tuple

import numpy as np

log = logging.getLogger(__name__)

#: CPU flags (Linux /proc/cpuinfo names) that decide how a CPU runs int8 dot products.
INT8_FLAGS = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8", "avx512_bf16", "amx_bf16")
#: Frames of the self-check, and its thresholds (share of pixels whose label equals fp32's).
SELF_CHECK_FRAMES = 4
SELF_CHECK_SLACK = 0.005
SELF_CHECK_MIN = 0.98
SELF_CHECK_ERROR_FACTOR = 1.5


def cpu_flags() -> FrozenSet[str]:
    """Return the running CPU's flags from /proc/cpuinfo (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def int8_isa(flags: Optional[FrozenSet[str]] = None) -> str:
    """``vnni`` (exact int32 dot products), ``avx2`` (int16 pair saturation), or the machine name."""
    flags = cpu_flags() if flags is None else flags
    if flags & {"avx512_vnni", "avx_vnni", "amx_int8"}:
        return "vnni"
    if "avx2" in flags:
        return "avx2"
    return platform.machine() or "unknown"


def cpu_record(flags: Optional[FrozenSet[str]] = None) -> Dict[str, Any]:
    """Return what the INT8 record says about the CPU a check ran on."""
    flags = cpu_flags() if flags is None else flags
    return {"model": cpu_model(), "int8_isa": int8_isa(flags), "features": sorted(f for f in INT8_FLAGS if f in flags)}


def checked_here(record: Mapping[str, Any], backend: str, flags: Optional[FrozenSet[str]] = None) -> Tuple[bool, str]:
    """Whether the record's accuracy check covers this CPU class and ``backend``; and why not."""
    acc = record.get("accuracy") or {}
    cpu = acc.get("cpu")
    isa = int8_isa(flags)
    if not cpu:
        return False, "its accuracy check does not name the CPU it ran on"
    if cpu.get("int8_isa") != isa:
        return False, f"its accuracy check ran on a {cpu.get('int8_isa')} CPU, this one is {isa}"
    backends = acc.get("backends") or {}
    if backend not in backends:
        return False, f"its accuracy check did not run on {backend}"
    if not backends[backend].get("holds"):
        return False, f"its accuracy check on {backend} failed"
    return True, ""


# ----------------------------------------------------------------------------- self-check


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pspnet_ros" / "int8_check"


def runtime_version(backend: str) -> str:
    try:
        if backend == "openvino":
            import openvino

            return openvino.__version__
        import onnxruntime

        return onnxruntime.__version__
    except Exception:  # noqa: BLE001 - only a cache key
        return "?"


def cache_key(graph_sha256: str, backend: str, size: Sequence[int], flags: Optional[FrozenSet[str]] = None) -> str:
    flags = cpu_flags() if flags is None else flags
    text = json.dumps([graph_sha256, backend, runtime_version(backend), list(size), cpu_model(),
                       sorted(f for f in INT8_FLAGS if f in flags)])
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def sample_inputs(mean: Sequence[float], std: Sequence[float], size: Sequence[int],
                  frames: int = SELF_CHECK_FRAMES) -> List[np.ndarray]:
    """Preprocessed (1, 3, h, w) inputs of the bundled sample frames, as the node feeds them."""
    import cv2

    from ..paths import sample_dir
    from . import ops

    files = sorted(p for p in sample_dir().glob("*") if p.suffix.lower() in (".jpg", ".png"))[:frames]
    if not files:
        raise FileNotFoundError(f"no sample frames in {sample_dir()}")
    mean255 = np.asarray(mean, np.float32) * 255.0
    inv_std255 = 1.0 / (np.asarray(std, np.float32) * 255.0)
    out = []
    for f in files:
        bgr = cv2.imread(str(f), cv2.IMREAD_COLOR)
        rgb = np.ascontiguousarray(bgr[..., ::-1])
        x, _ = ops.preprocess_np(rgb[None], tuple(size), mean255, inv_std255)
        out.append(np.ascontiguousarray(x.numpy()))
    return out


def compare(run_ref: Callable[[np.ndarray], np.ndarray], run: Callable[[np.ndarray], np.ndarray],
            inputs: Sequence[np.ndarray]) -> Tuple[float, float]:
    """Return (share of pixels with the same argmax label, mean |logit difference| / mean |reference logit|)."""
    same = total = 0
    err = mag = 0.0
    for x in inputs:
        a, b = np.asarray(run_ref(x), np.float32), np.asarray(run(x), np.float32)
        same += int((a.argmax(1) == b.argmax(1)).sum())
        total += a.shape[0] * a.shape[2] * a.shape[3]
        err += float(np.abs(a - b).sum())
        mag += float(np.abs(a).sum())
    return same / max(1, total), err / max(mag, 1e-12)


def self_check(graph_sha256: str, backend: str, size: Sequence[int], run_fp32, run_int8,
               inputs_fn: Callable[[], List[np.ndarray]], reference: Optional[Mapping[str, float]],
               flags: Optional[FrozenSet[str]] = None) -> Dict[str, Any]:
    """Run (or read from the cache) the self-check; return its result dict (``passed``, ``agreement``...).

    ``reference``: ``{"agreement", "logit_error"}`` measured on the check CPU (the record's
    ``accuracy.backends.<backend>.self_check``), or None.
    """
    path = cache_dir() / f"{cache_key(graph_sha256, backend, size, flags)}.json"
    try:
        cached = json.loads(path.read_text())
        if cached.get("graph_sha256") == graph_sha256:
            cached["cached"] = True
            return cached
    except (OSError, ValueError):
        pass
    inputs = inputs_fn()
    agree, error = compare(run_fp32, run_int8, inputs)
    if reference:
        need = max(0.0, float(reference["agreement"]) - SELF_CHECK_SLACK)
        max_error = SELF_CHECK_ERROR_FACTOR * float(reference["logit_error"])
    else:
        need, max_error = SELF_CHECK_MIN, None
    passed = agree >= need and (max_error is None or error <= max_error)
    result = {"graph_sha256": graph_sha256, "backend": backend, "runtime": runtime_version(backend),
              "cpu": cpu_record(flags), "frames": len(inputs), "agreement": round(agree, 5),
              "required": round(need, 5), "logit_error": round(error, 5),
              "max_logit_error": None if max_error is None else round(max_error, 5), "passed": passed,
              "date": datetime.datetime.now().isoformat(timespec="seconds")}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(result))
        tmp.replace(path)
    except OSError as exc:
        log.info("cannot cache the INT8 self-check in %s (%s)", path.parent, exc)
    result["cached"] = False
    return result
