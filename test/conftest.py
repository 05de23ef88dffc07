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


def make_tiny_checkpoint(path: Path, dataset: str = "kitti_road", backbone: str = "resnet18",
                         seed: int = 0) -> Path:
    """A small random PSPNet checkpoint with real dataset metadata."""
    import torch

    from pspnet_ros.data.classes import dataset_meta
    from pspnet_ros.models import build_pspnet, save_checkpoint

    torch.manual_seed(seed)
    meta = dataset_meta(dataset)
    kwargs = dict(num_classes=len(meta["classes"]), backbone=backbone, output_stride=8,
                  head_channels=32, aux=False)
    if backbone == "mobilenetv3_large":
        kwargs["output_stride"] = 16
    model = build_pspnet(**kwargs).eval()
    meta.update(arch="pspnet", arch_kwargs=kwargs, input_size=[96, 320], metrics={})
    return save_checkpoint(path, model, meta)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny_kitti.pt")
