"""Shared fixtures: tiny checkpoints, real frames from the shared datasets, thread limits."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

# Tests share 2 cores with each other and with DDS threads; one intra-op thread keeps them
# predictable. Set before torch is imported anywhere.
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]

from pspnet_test_helpers import make_tiny_checkpoint  # noqa: E402  (re-exported for fixtures)


@pytest.fixture(scope="session")
def data_root() -> Path:
    from pspnet_ros.paths import data_root as _root

    root = _root()
    if not (root / "kitti_road" / "image_2").is_dir():
        pytest.fail(f"datasets not found at {root} (set PSPNET_DATA_ROOT)")
    return root


@pytest.fixture(scope="session")
def kitti_frames(data_root):
    """Three real KITTI road val frames as (stem, RGB uint8 HxWx3)."""
    from PIL import Image

    stems = (data_root / "kitti_road" / "val.txt").read_text().split()[:3]
    return [(s, np.asarray(Image.open(data_root / "kitti_road" / "image_2" / f"{s}.jpg").convert("RGB")))
            for s in stems]


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny_kitti.pt")
