"""Reading the INT8 models ``pspnet quantize`` writes: the runtime half of INT8 (no onnx, no calibration).

An INT8 model, ``<checkpoint stem>.int8.onnx`` next to its checkpoint, holds the model metadata
(``pspnet_meta``) and the quantization record (``pspnet_int8``: the checkpoint's SHA-256, the
inference size, the calibration and the accuracy check) as ONNX metadata. They are read through
ONNX Runtime's model metadata (a session with graph optimizations off: ~25 ms for the shipped
models, where importing the onnx package alone takes ~1 s), so a camera node needs no onnx.
Making and checking INT8 models is :mod:`pspnet_ros.tools.quantize`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

INT8_SUFFIX = ".int8.onnx"
RECORD_KEY = "pspnet_int8"
META_KEY = "pspnet_meta"
#: Largest accepted loss (fp32 - int8, in points) per metric of the accuracy check.
TOLERANCE = {"miou": 1.0, "maxf": 0.5}


class Int8Unavailable(ValueError):
    """No usable INT8 model for a checkpoint; the message says why and what to run.

    ``stale``: an INT8 file exists but does not fit (other weights, other size, edited graph): the
    user retrained or changed something and runs 3-5x slower until re-quantizing.
    """

    def __init__(self, message: str, stale: bool = False) -> None:
        super().__init__(message)
        self.stale = stale


def _varint(data: bytes, i: int) -> Tuple[int, int]:
    value = shift = 0
    while True:
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, i


def graph_sha256(data: bytes) -> str:
    """SHA-256 of the graph (nodes and weights) of serialized ONNX model bytes.

    The ``graph`` field (7) of the ModelProto, read off the protobuf wire format (no onnx import):
    the same bytes as ``onnx``'s ``model.graph.SerializeToString()``; the metadata holding the
    record is outside it.
    """
    i = 0
    while i < len(data):
        key, i = _varint(data, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            _, i = _varint(data, i)
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        elif wire == 2:
            n, i = _varint(data, i)
            if field == 7:
                return hashlib.sha256(data[i:i + n]).hexdigest()
            i += n
        else:
            raise ValueError(f"unexpected protobuf wire type {wire}")
    raise ValueError("no graph in the ONNX model")


def int8_path(checkpoint: Union[str, Path], size: Optional[Sequence[int]] = None) -> Path:
    """Return ``models/x.int8.onnx`` for ``models/x.pt``, or ``models/x.int8.HxW.onnx`` with ``size``.

    The sized name holds another camera's aspect-true size; the plain one the checkpoint's own.
    """
    p = Path(checkpoint)
    if size is None:
        return p.with_name(p.stem + INT8_SUFFIX)
    return p.with_name(f"{p.stem}.int8.{int(size[0])}x{int(size[1])}.onnx")


def sha256_file(path: Union[str, Path]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _metadata_props(path: Union[str, Path], data: Optional[bytes]) -> Dict[str, str]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    source = data if data is not None else str(path)
    session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    return dict(session.get_modelmeta().custom_metadata_map)


def read_record(path: Union[str, Path], data: Optional[bytes] = None) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Return (model metadata, quantization record) stored in an INT8 ONNX file (or its ``data``)."""
    props = _metadata_props(path, data)
    if RECORD_KEY not in props or META_KEY not in props:
        raise Int8Unavailable(f"{path} has no {RECORD_KEY}/{META_KEY} metadata: not written by pspnet quantize",
                              stale=True)
    record = json.loads(props[RECORD_KEY])
    if record.get("graph_sha256"):
        raw = data if data is not None else Path(path).read_bytes()
        if record["graph_sha256"] != graph_sha256(raw):
            raise Int8Unavailable(f"{path}: the graph is not the one its record was written for (graph SHA-256 "
                                  "differs)", stale=True)
    return json.loads(props[META_KEY]), record


def accuracy_holds(record: Mapping[str, Any]) -> Tuple[bool, str]:
    """Whether the record's accuracy check passed, and a one-line reason."""
    acc = record.get("accuracy")
    if not acc:
        return False, "its accuracy was not checked (pspnet quantize --no-check)"
    return bool(acc.get("holds")), acc.get("summary", "")


def load_int8(checkpoint: Union[str, Path], size: Sequence[int], *,
              path: Optional[Union[str, Path]] = None) -> Tuple[bytes, Dict[str, Any]]:
    """Return (ONNX bytes, record) of the checkpoint's INT8 model, checked to belong to it.

    Raises :class:`Int8Unavailable` if the file is missing, was made from other weights, or
    for another inference size.
    """
    checkpoint = Path(checkpoint)
    if not path:
        # The file for this size, else the checkpoint's own (checked below to be for this size).
        path = int8_path(checkpoint, size)
        if not path.is_file():
            path = int8_path(checkpoint)
    path = Path(path)
    fix = f"pspnet quantize --checkpoint {checkpoint} --size {size[0]}x{size[1]}"
    if not path.is_file():
        raise Int8Unavailable(f"no INT8 model for {checkpoint.name} ({path} does not exist); make one with: {fix}")
    data = path.read_bytes()
    try:
        _, record = read_record(path, data)
    except Int8Unavailable as exc:
        raise Int8Unavailable(f"{exc}; re-run: {fix}", stale=exc.stale) from None
    except Exception as exc:  # noqa: BLE001 - any parse problem: name the file
        raise Int8Unavailable(f"{path}: cannot read ({type(exc).__name__}: {exc}); re-run: {fix}",
                              stale=True) from None
    if record.get("checkpoint_sha256") != sha256_file(checkpoint):
        raise Int8Unavailable(f"{path} was quantized from other weights than {checkpoint} "
                              f"(SHA-256 differs); re-run: {fix}", stale=True)
    if list(record.get("input_size", [])) != [int(v) for v in size]:
        raise Int8Unavailable(f"{path} is for inference size {record.get('input_size')}, not "
                              f"{list(size)}; quantize for this size with: {fix}", stale=True)
    return data, record
