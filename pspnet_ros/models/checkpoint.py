"""Checkpoint I/O: one self-describing file per model.

A checkpoint is a dict of tensors and plain Python values only, so it loads with
``torch.load(weights_only=True)`` (no pickle code execution)::

    {"format": "pspnet_ros/1",
     "model": state_dict,
     "meta": {"arch": "pspnet", "arch_kwargs": {...}, "classes": [...], "palette": [[r,g,b],...],
              "ignore_index": 255, "mean": [...], "std": [...], "input_size": [h, w],
              "dataset": "kitti_road", "metrics": {...}, ...},
     # training state, present in training checkpoints only:
     "optimizer": ..., "scheduler": ..., "scaler": ..., "epoch": int, "config": {...}}
"""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .pspnet import build_model

FORMAT = "pspnet_ros/1"
REQUIRED_META = ("arch", "arch_kwargs", "classes", "palette", "ignore_index", "mean", "std")
PathLike = Union[str, os.PathLike]


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable, or does not describe the expected model."""

    def __init__(self, path: PathLike, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"checkpoint {self.path}: {problem}")


def validate_meta(meta: Mapping[str, Any], path: PathLike = "<meta>") -> None:
    """Raise CheckpointError if ``meta`` lacks keys or is internally inconsistent."""
    if not isinstance(meta, Mapping):
        raise CheckpointError(path, f"metadata must be a dict, got {type(meta).__name__}")
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise CheckpointError(path, f"metadata lacks {', '.join(missing)}")
    classes, palette = list(meta["classes"]), list(meta["palette"])
    n = meta["arch_kwargs"].get("num_classes")
    if n != len(classes):
        raise CheckpointError(path, f"metadata lists {len(classes)} class names but the "
                                    f"architecture has num_classes={n}")
    if len(palette) != len(classes) or any(len(c) != 3 for c in palette):
        raise CheckpointError(path, f"palette must hold one RGB triple per class "
                                    f"({len(classes)}), got {len(palette)} entries")
    if len(meta["mean"]) != 3 or len(meta["std"]) != 3:
        raise CheckpointError(path, "mean and std must have 3 values each")


def _plain(value: Any) -> Any:
    """Convert tuples/numpy scalars to lists/ints/floats so the file stays weights_only-safe."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, torch.Tensor):
        return value.item()
    return value


def save_checkpoint(path: PathLike, model: nn.Module, meta: Mapping[str, Any], *,
                    half: bool = False, **training_state: Any) -> Path:
    """Write ``model`` + ``meta`` (+ optional training state) atomically to ``path``.

    ``half=True`` stores floating-point weights as fp16 (shipped models); loading restores
    fp32. ``training_state`` may hold optimizer/scheduler/scaler state dicts, ``epoch`` and
    ``config``; it is stored as given.
    """
    path = Path(path)
    validate_meta(meta, path)
    module = model.module if hasattr(model, "module") else model  # unwrap DDP
    state = {k: (v.detach().half() if half and v.is_floating_point() else v.detach()).cpu()
             for k, v in module.state_dict().items()}
    blob = {"format": FORMAT, "model": state, "meta": _plain(dict(meta))}
    blob.update({k: v for k, v in training_state.items() if v is not None})
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write to a temp file in the same directory and rename: a crash never leaves half a file.
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(blob, tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; checkpoints are shared files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_checkpoint(path: PathLike, map_location: Union[str, torch.device] = "cpu") -> Dict[str, Any]:
    """Load the raw checkpoint dict safely (``weights_only=True``) with specific errors."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(p, "file does not exist")
    if not p.is_file():
        raise CheckpointError(p, "is not a regular file")
    if p.stat().st_size == 0:
        raise CheckpointError(p, "file is empty")
    with p.open("rb") as fh:
        magic = fh.read(4)
    if magic != b"PK\x03\x04":  # torch.save writes a zip archive
        raise CheckpointError(p, "not a PyTorch checkpoint: not a zip archive (corrupt, truncated, "
                                 "or a different file type)")
    try:
        blob = torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        why = [ln.strip() for ln in str(exc).splitlines() if "global" in ln.lower()]
        raise CheckpointError(p, "refused to load: the file contains objects other than tensors "
                                 "and plain data (loaded with weights_only=True)"
                                 + (f": {why[0][:200]}" if why else "")) from None
    except (RuntimeError, zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(p, f"not a readable PyTorch checkpoint (truncated or corrupt?): {first}") from None
    if not isinstance(blob, dict) or "model" not in blob or "meta" not in blob:
        raise CheckpointError(p, "not a pspnet_ros checkpoint (no 'model' and 'meta' entries)")
    if blob.get("format") != FORMAT:
        raise CheckpointError(p, f"unsupported checkpoint format {blob.get('format')!r}, expected {FORMAT!r}")
    validate_meta(blob["meta"], p)
    return blob


def load_model(path: PathLike, device: Union[str, torch.device] = "cpu", *,
               expected_classes: Optional[Sequence[str]] = None) -> Tuple[nn.Module, Dict[str, Any]]:
    """Build the model described by the checkpoint, load its weights, return ``(model, meta)``.

    The model is in eval mode, fp32, on ``device``. ``expected_classes`` (optional) must equal
    the checkpoint's class names, in order.
    """
    blob = read_checkpoint(path, map_location="cpu")
    meta = blob["meta"]
    if expected_classes is not None and list(expected_classes) != list(meta["classes"]):
        raise CheckpointError(path, f"classes {list(meta['classes'])} do not match the expected "
                                    f"{list(expected_classes)}")
    try:
        model = build_model(meta["arch"], **meta["arch_kwargs"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(path, f"invalid architecture {meta['arch']!r} {meta['arch_kwargs']}: {exc}") from None
    try:
        model.load_state_dict(blob["model"], strict=True)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        raise CheckpointError(path, "weights do not match the architecture "
                                    f"{meta['arch']} {meta['arch_kwargs']}: {' '.join(lines[1:3])[:300]}") from None
    return model.float().to(device).eval(), meta
