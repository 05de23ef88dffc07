"""Where shipped models and datasets live, and the ``checkpoint: auto`` choice.

Shipped models are listed in ``models/registry.json`` (``{dataset: {"cpu": file, "cuda": file}}``):
the light model for CPU, the strongest for CUDA. The folder is found in, in order: the
``PSPNET_MODELS_DIR`` environment variable, the ROS package share directory
(``share/pspnet_ros/models`` after ``colcon build``/``pip install``), the source tree.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

PACKAGE = "pspnet_ros"
_SRC_ROOT = Path(__file__).resolve().parents[1]


class ModelNotFoundError(FileNotFoundError):
    pass


def models_dir() -> Path:
    env = os.environ.get("PSPNET_MODELS_DIR")
    candidates = [Path(env)] if env else []
    candidates.append(_SRC_ROOT / "models")  # source tree / editable install
    candidates.append(Path(sys.prefix) / "share" / PACKAGE / "models")
    for prefix in filter(None, os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)):
        candidates.append(Path(prefix) / "share" / PACKAGE / "models")
    for c in candidates:
        if (c / "registry.json").is_file():
            return c
    raise ModelNotFoundError("no shipped models found (looked for registry.json in: "
                             + ", ".join(str(c) for c in candidates) + ")")


def resolve_device(device: str = "auto") -> str:
    """'auto' -> 'cuda' when available else 'cpu'; 'cuda' without CUDA raises."""
    import torch

    if device in ("auto", "", None):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available")
    if not (str(device) == "cpu" or str(device).startswith("cuda")):
        raise ValueError(f"device must be auto, cpu or cuda[:N], got {device!r}")
    return str(device)


def shipped_model(dataset: str = "kitti_road", device: str = "cpu") -> Path:
    """Return the shipped checkpoint for ``dataset`` on ``device`` ('cpu' or 'cuda...')."""
    root = models_dir()
    registry = json.loads((root / "registry.json").read_text())
    if dataset not in registry:
        raise ModelNotFoundError(f"no shipped model for dataset {dataset!r} "
                                 f"(have: {', '.join(registry)}) in {root}")
    kind = "cuda" if str(device).startswith("cuda") else "cpu"
    entry = registry[dataset]
    name = entry.get(kind) or entry.get("cpu")
    path = root / name
    if not path.is_file():
        raise ModelNotFoundError(f"registry names {path} for {dataset}/{kind}, but the file is missing")
    return path


def resolve_checkpoint(checkpoint: Optional[str], dataset: str = "kitti_road",
                       device: str = "cpu") -> Path:
    """``None``/'auto' -> the shipped model for the device; anything else is a path."""
    if checkpoint in (None, "", "auto"):
        return shipped_model(dataset, device)
    return Path(os.path.expanduser(str(checkpoint)))


def data_root(explicit: Optional[str] = None) -> Path:
    """Dataset root: explicit > $PSPNET_DATA_ROOT > ../shared/data (from cwd or source tree)."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("PSPNET_DATA_ROOT")
    if env:
        return Path(env)
    for base in (Path.cwd(), _SRC_ROOT):
        cand = base.parent / "shared" / "data"
        if cand.is_dir():
            return cand
    return _SRC_ROOT.parent / "shared" / "data"


def sample_dir() -> Path:
    """Return the shipped demo frames (data/sample/kitti_road): source tree, else the installed share."""
    candidates = [_SRC_ROOT / "data" / "sample" / "kitti_road",
                  Path(sys.prefix) / "share" / PACKAGE / "data" / "sample" / "kitti_road"]
    for prefix in filter(None, os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)):
        candidates.append(Path(prefix) / "share" / PACKAGE / "data" / "sample" / "kitti_road")
    for c in candidates:
        if c.is_dir():
            return c
    return candidates[0]
