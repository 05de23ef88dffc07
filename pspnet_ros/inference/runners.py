"""Ways to run the network: ``TorchRunner``, ``OrtRunner`` and ``OpenVinoRunner``.

``TorchRunner``: eager, autocast, channels_last, optional ``torch.compile`` and CUDA graphs.
``OrtRunner`` (ONNX Runtime) and ``OpenVinoRunner`` (OpenVINO): the CPU backends, for the fp32
ONNX export or the INT8 QDQ model of :mod:`pspnet_ros.tools.quantize`.

A runner maps a normalized (B, 3, h, w) float batch at the fixed inference size to
(B, K, h, w) logits. Because the inference size is fixed, every forward has one of
``max_batch`` shapes, whatever the camera resolution - which is what makes compilation and
graph capture worthwhile.
"""

from __future__ import annotations

import copy
import io
import logging
import threading
import time
import warnings
from typing import Callable, Dict, Iterable, Optional, Tuple, Union

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

Size = Tuple[int, int]
AMP_DTYPES = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


class LogitsOnly(nn.Module):
    """Wraps a segmentation model so ``forward`` returns the ``out`` logits tensor only."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["out"]


class TorchRunner:
    """Eager PyTorch forward with optional autocast, channels_last, compile and CUDA graphs."""

    name = "torch"

    def __init__(self, model: nn.Module, device: torch.device, precision: str = "fp32",
                 channels_last: bool = False) -> None:
        if precision not in AMP_DTYPES:
            raise ValueError(f"precision must be one of {', '.join(AMP_DTYPES)}, got {precision!r}")
        self.device = device
        self.precision = precision
        self.amp_dtype = AMP_DTYPES[precision]
        self.channels_last = channels_last
        self.model = model.to(device).eval()
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self._fn: Callable[[torch.Tensor], torch.Tensor] = self._eager
        self._graphs: Dict[int, Tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]] = {}
        # One owner for the graphs' static buffers: replays from several threads (the engine's
        # worker and a predict() call) take the lock and run on one stream, so copy-in, replay
        # and copy-out of one call are never interleaved with another's, on the CPU or the GPU.
        self._graph_lock = threading.Lock()
        self._graph_stream = None
        self.graph_capture_error: Optional[str] = None
        self.compiled = False
        if device.type == "cuda":
            # Shapes are fixed (inference size x batch sizes): let cuDNN pick the fastest kernels.
            torch.backends.cudnn.benchmark = True

    def _eager(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                            enabled=self.amp_dtype is not None):
            return self.model(x)["out"]

    @property
    def graph_batch_sizes(self) -> Tuple[int, ...]:
        return tuple(sorted(self._graphs))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        graph = self._graphs.get(x.shape[0])
        if graph is not None and graph[1].shape == x.shape:  # graphs are captured at one size
            return self._replay(graph, x)
        return self._fn(x)

    def _replay(self, graph, x: torch.Tensor) -> torch.Tensor:
        g, static_in, static_out = graph
        caller = torch.cuda.current_stream(self.device)
        with self._graph_lock:
            side = self._graph_stream
            side.wait_stream(caller)  # x is ready on the caller's stream
            with torch.cuda.stream(side):
                static_in.copy_(x)
                g.replay()
                out = static_out.clone()  # the next replay rewrites static_out
            caller.wait_stream(side)
            out.record_stream(caller)
            x.record_stream(side)
        return out

    def prepare(self, batch_sizes: Iterable[int], size: Size, *,
                compile: bool = False,  # noqa: A002 (public keyword argument, callers pass compile=)
                cuda_graphs: bool = False, warmup: bool = True) -> None:
        """Compile / capture / warm up for the given batch sizes; failures fall back to eager."""
        batch_sizes = sorted({int(b) for b in batch_sizes})
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        dummy = {b: torch.zeros((b, 3) + tuple(size), device=self.device).contiguous(memory_format=fmt)
                 for b in batch_sizes}
        if compile and not self.compiled:
            t0 = time.perf_counter()
            try:
                fn = torch.compile(self._eager, dynamic=False)
                with torch.inference_mode():
                    for b in batch_sizes:
                        fn(dummy[b])
                self._fn, self.compiled = fn, True
                log.info("torch.compile ready for batch sizes %s in %.1f s", batch_sizes,
                         time.perf_counter() - t0)
            except Exception as exc:  # noqa: BLE001 - any compiler failure means: stay eager
                log.warning("torch.compile failed (%s: %s); running eager",
                            type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
                self._fn = self._eager
        if cuda_graphs:
            if self.device.type != "cuda":
                log.info("cuda_graphs ignored on %s", self.device)
            elif not set(batch_sizes) <= set(self._graphs):
                self._capture(batch_sizes, dummy)
        if warmup:
            with torch.inference_mode():
                for b in batch_sizes:
                    self(dummy[b])
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)

    def _capture(self, batch_sizes, dummy) -> None:
        try:
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.inference_mode():
                with torch.cuda.stream(side):  # warm-up off the default stream, as capture requires
                    for b in batch_sizes:
                        for _ in range(3):
                            self._fn(dummy[b])
                torch.cuda.current_stream(self.device).wait_stream(side)
                # One memory pool for every batch size (only one graph replays at a time, see
                # _replay); captured largest first, so the smaller ones fit in its blocks.
                pool = torch.cuda.graph_pool_handle()
                for b in sorted(batch_sizes, reverse=True):
                    static_in = dummy[b].clone()
                    g = torch.cuda.CUDAGraph()
                    with torch.cuda.graph(g, pool=pool):
                        static_out = self._fn(static_in)
                    self._graphs[b] = (g, static_in, static_out)
            self._graph_stream = torch.cuda.Stream(self.device)
            self.graph_capture_error = None
            log.info("captured CUDA graphs for batch sizes %s", batch_sizes)
        except Exception as exc:  # noqa: BLE001 - capture failure means: stay without graphs
            self._graphs.clear()
            self.graph_capture_error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            log.warning("CUDA graph capture failed (%s); running without graphs", self.graph_capture_error)


# ----------------------------------------------------------------------------- ONNX


def _pool_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """Return the (n_out, n_in) matrix averaging the bins of ``adaptive_avg_pool``.

    Same bin edges: start = floor(i n_in / n_out), end = ceil((i + 1) n_in / n_out).
    """
    m = torch.zeros(n_out, n_in)
    for i in range(n_out):
        start, end = (i * n_in) // n_out, -((-(i + 1) * n_in) // n_out)
        m[i, start:end] = 1.0 / (end - start)
    return m


class FixedAdaptiveAvgPool2d(nn.Module):
    """``adaptive_avg_pool2d`` for one known input size, as two matmuls with constant averaging matrices.

    Exact, and exportable (the ONNX exporter rejects adaptive pooling whose output size does not
    divide the input size - PSPNet's 1/2/3/6 bins on a 12x39 feature map).
    """

    def __init__(self, output_size: Size, input_size: Size) -> None:
        super().__init__()
        self.register_buffer("rows", _pool_matrix(input_size[0], output_size[0]))
        self.register_buffer("cols_t", _pool_matrix(input_size[1], output_size[1]).t().contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.matmul(torch.matmul(self.rows, x), self.cols_t)


def make_exportable(model: nn.Module, size: Size) -> nn.Module:
    """Return a CPU fp32 copy of ``model`` returning logits, with adaptive pools fixed for ``size``."""
    net = copy.deepcopy(model).float().cpu().eval()
    pools = [(name, m) for name, m in net.named_modules() if isinstance(m, nn.AdaptiveAvgPool2d)]
    seen: Dict[str, Size] = {}
    hooks = [m.register_forward_pre_hook(
        (lambda n: lambda mod, args: seen.__setitem__(n, tuple(args[0].shape[-2:])))(name))
        for name, m in pools]
    try:
        with torch.inference_mode():
            net(torch.zeros((1, 3) + tuple(size)))
    finally:
        for h in hooks:
            h.remove()
    for name, m in pools:
        if name not in seen:
            continue
        out = m.output_size if isinstance(m.output_size, tuple) else (m.output_size, m.output_size)
        out = tuple(seen[name][i] if o is None else o for i, o in enumerate(out))
        parent_name, _, attr = name.rpartition(".")
        parent = net.get_submodule(parent_name) if parent_name else net
        setattr(parent, attr, FixedAdaptiveAvgPool2d(out, seen[name]))
    return LogitsOnly(net).eval()


def export_onnx(model: nn.Module, size: Size, dest: Union[str, io.BytesIO, None] = None, *,
                opset: int = 17, dynamic_batch: bool = True) -> bytes:
    """Export ``model`` to ONNX; return the bytes (and write ``dest`` if given).

    Input (B, 3, h, w) normalized float, output (B, K, h, w) logits at the fixed inference size.
    """
    net = make_exportable(model, size)
    buf = io.BytesIO()
    axes = {"input": {0: "batch"}, "logits": {0: "batch"}} if dynamic_batch else None
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer and deprecation chatter
        torch.onnx.export(net, (torch.zeros((1, 3) + tuple(size)),), buf, input_names=["input"],
                          output_names=["logits"], opset_version=opset, dynamic_axes=axes,
                          dynamo=False)
    data = buf.getvalue()
    if isinstance(dest, io.BytesIO):
        dest.write(data)
    elif dest is not None:
        with open(dest, "wb") as f:
            f.write(data)
    return data


def ort_session(onnx_bytes: bytes, num_threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = max(1, int(num_threads))
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    # No busy-waiting between ops: on a CPU shared with the rest of a robot (or a training
    # run) spinning threads cost more than they save (measured here under load: 2 threads
    # 77.7 ms/frame spinning vs 54.8 ms without, MobileNetV3 PSPNet at 188x621).
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(onnx_bytes, so, providers=["CPUExecutionProvider"])


# Exported graphs by (checkpoint path, mtime, size, inference size): loading the same checkpoint
# again in one process (tests, tools) skips the export and the parity check.
_ONNX_CACHE: Dict[Tuple, bytes] = {}


def fp32_onnx(model: nn.Module, size: Size, *, check: bool = True, cache_key: Optional[Tuple] = None) -> bytes:
    """Export ``model`` at ``size`` to ONNX (fp32), checked against PyTorch; cached per process.

    The check runs ONNX Runtime on one random batch; a mismatch raises RuntimeError (callers
    fall back to torch).
    """
    size = tuple(size)
    key = None if cache_key is None else tuple(cache_key) + size
    data = _ONNX_CACHE.get(key) if key is not None else None
    if data is not None:
        return data
    data = export_onnx(model, size)
    if check:
        x = torch.randn((1, 3) + size, generator=torch.Generator().manual_seed(0))
        with torch.inference_mode():
            ref = LogitsOnly(copy.deepcopy(model).float().cpu().eval())(x).numpy()
        got = ort_session(data, 1).run(None, {"input": x.numpy()})[0]
        err = float(np.abs(got - ref).max())
        tol = 1e-3 * max(1.0, float(np.abs(ref).max()))
        if not np.isfinite(err) or err > tol:
            raise RuntimeError(f"ONNX Runtime output differs from PyTorch by {err:.3g} (> {tol:.3g})")
    if key is not None:
        if len(_ONNX_CACHE) >= 4:
            _ONNX_CACHE.pop(next(iter(_ONNX_CACHE)))
        _ONNX_CACHE[key] = data
    return data


class OrtRunner:
    """ONNX Runtime on CPU for an ONNX graph (the fp32 export, or the INT8 QDQ model).

    ``precision`` is a label (``fp32`` or ``int8``): what the graph holds, not a conversion.
    """

    name = "onnxruntime"

    def __init__(self, onnx_bytes: bytes, size: Size, num_threads: int, precision: str = "fp32") -> None:
        t0 = time.perf_counter()
        self.size = tuple(size)
        self.precision = precision
        self.session = ort_session(onnx_bytes, num_threads)
        log.info("ONNX Runtime %s session ready in %.1f s", precision, time.perf_counter() - t0)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = self.session.run(None, {"input": x.float().contiguous().numpy()})[0]
        return torch.from_numpy(out)

    def prepare(self, batch_sizes: Iterable[int], size: Size, *,
                compile: bool = False,  # noqa: A002 (public keyword argument, callers pass compile=)
                cuda_graphs: bool = False, warmup: bool = True) -> None:
        if compile or cuda_graphs:
            log.info("compile/cuda_graphs do not apply to the %s backend", self.name)
        if warmup:
            for b in sorted(set(batch_sizes)):
                self(torch.zeros((b, 3) + self.size))


#: OpenVINO inference precision hint per pspnet precision. ``int8`` runs the QDQ graph's integer
#: convolutions and keeps everything else in f32, like ONNX Runtime does; ``bf16`` lets the CPU
#: plugin run the float ops in bfloat16 (AVX512-BF16 / AMX CPUs).
OV_PRECISION_HINTS = {"fp32": "f32", "int8": "f32", "bf16": "bf16"}


class OpenVinoRunner:
    """OpenVINO on CPU for the same ONNX graphs as :class:`OrtRunner`.

    Two compiled models: a static batch of 1 (one camera at its own rate: the node's usual case,
    ~5 % faster than a dynamic batch here) and a bounded batch dimension 2..max_batch (several
    cameras or queued frames; no recompile per batch size). Threads: ``INFERENCE_NUM_THREADS``,
    one stream, no core pinning (the ROS executor and DDS threads share the cores).
    """

    name = "openvino"

    def __init__(self, onnx_bytes: bytes, size: Size, num_threads: int, precision: str = "fp32",
                 max_batch: int = 8) -> None:
        import openvino as ov

        if precision not in OV_PRECISION_HINTS:
            raise ValueError(f"openvino runs {', '.join(OV_PRECISION_HINTS)}, not {precision!r}")
        t0 = time.perf_counter()
        self.size = tuple(size)
        self.precision = precision
        self.max_batch = max(1, int(max_batch))
        config = {"INFERENCE_NUM_THREADS": max(1, int(num_threads)), "NUM_STREAMS": 1,
                  "PERFORMANCE_HINT": "LATENCY", "ENABLE_CPU_PINNING": False,
                  "INFERENCE_PRECISION_HINT": OV_PRECISION_HINTS[precision]}
        core = ov.Core()
        self._compiled = {}
        for key, batch in (("single", ov.Dimension(1)), ("batch", ov.Dimension(2, max(2, self.max_batch)))):
            if key == "batch" and self.max_batch < 2:
                continue
            model = ov.convert_model(io.BytesIO(onnx_bytes))
            model.reshape([batch, 3, self.size[0], self.size[1]])
            self._compiled[key] = core.compile_model(model, "CPU", config)
        self._local = threading.local()  # infer requests per calling thread
        log.info("OpenVINO %s model ready in %.1f s", precision, time.perf_counter() - t0)

    def _request(self, key: str):
        reqs = getattr(self._local, "reqs", None)
        if reqs is None:
            reqs = self._local.reqs = {}
        if key not in reqs:
            reqs[key] = self._compiled[key].create_infer_request()
        return reqs[key]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        for start in range(0, x.shape[0], self.max_batch):  # larger batches run in chunks
            chunk = x[start:start + self.max_batch].float().contiguous().numpy()
            req = self._request("single" if chunk.shape[0] == 1 else "batch")
            res = req.infer({0: chunk}, share_inputs=True)
            outs.append(np.array(res[0], copy=True))  # the request reuses its output buffer
        return torch.from_numpy(outs[0] if len(outs) == 1 else np.concatenate(outs))

    prepare = OrtRunner.prepare
