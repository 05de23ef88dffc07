"""Tiny fake dataset trees in the real on-disk layouts (written into tmp_path by tests)."""

from pathlib import Path

import numpy as np
from PIL import Image

ROAD, NOT_ROAD, OUTSIDE = (255, 0, 255), (255, 0, 0), (0, 0, 0)


def _img(h, w, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def write_kitti(root: Path, n_train=3, n_val=2, h=48, w=96, ext=".png") -> Path:
    """KITTI road layout: image_2/<cat>_<id>.ext, gt_image_2/<cat>_road_<id>.png, train/val.txt.

    The GT marks the lower half road, the upper half not-road, and the top rows outside.
    """
    (root / "image_2").mkdir(parents=True)
    (root / "gt_image_2").mkdir()
    stems = [f"um_{i:06d}" for i in range(n_train + n_val)]
    for i, stem in enumerate(stems):
        Image.fromarray(_img(h, w, i)).save(root / "image_2" / f"{stem}{ext}")
        gt = np.zeros((h, w, 3), np.uint8)
        gt[: h // 2] = NOT_ROAD
        gt[h // 2:] = ROAD
        gt[:4] = OUTSIDE
        Image.fromarray(gt).save(root / "gt_image_2" / f"um_road_{i:06d}.png")
    (root / "train.txt").write_text("\n".join(stems[:n_train]) + "\n")
    (root / "val.txt").write_text("\n".join(stems[n_train:]) + "\n")
    return root


def camvid_label(h, w):
    lbl = np.zeros((h, w), np.uint8)
    lbl[:, : w // 3] = 3   # road
    lbl[:, w // 3: 2 * w // 3] = 8  # car
    lbl[:, 2 * w // 3:] = 11  # void
    return lbl


def write_camvid(root: Path, n=2, h=36, w=48, ext=".jpg") -> Path:
    for split in ("train", "val"):
        (root / split).mkdir(parents=True)
        (root / f"{split}annot").mkdir()
        for i in range(n):
            Image.fromarray(_img(h, w, i)).save(root / split / f"seq_{i:06d}{ext}")
            Image.fromarray(camvid_label(h, w)).save(root / f"{split}annot" / f"seq_{i:06d}.png")
    return root
