"""CamVid and KITTI road datasets.

Both return ``(image, mask)`` after the paired transform: by default ``image`` is a (3, H, W)
uint8 tensor (RGB) and ``mask`` a (H, W) int64 tensor with class ids and 255 for ignore.
Images may be .png or .jpg.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .classes import IGNORE_INDEX

log = logging.getLogger(__name__)
IMAGE_EXTS = (".png", ".jpg", ".jpeg")
Pair = Tuple[Path, Path]


def _find_image(folder: Path, stem: str) -> Optional[Path]:
    for ext in IMAGE_EXTS:
        p = folder / f"{stem}{ext}"
        if p.is_file():
            return p
    return None


def read_rgb(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB."""
    with Image.open(path) as im:
        return np.array(im.convert("RGB"))  # writable: torch.from_numpy shares it


def _read_list_file(list_file: Path, root: Path) -> List[Pair]:
    """Lines ``image_path label_path`` (relative to ``root``, else to the list file's folder)."""
    pairs = []
    for n, line in enumerate(list_file.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"{list_file}:{n}: expected 'image_path label_path', got {line!r}")
        resolved = []
        for p in parts:
            cand = Path(p)
            if not cand.is_absolute():
                cand = root / p if (root / p).exists() else list_file.parent / p
            resolved.append(cand)
        pairs.append((resolved[0], resolved[1]))
    return pairs


class SegmentationDataset(Dataset):
    """A list of (image, label) files plus a label decoder and a paired transform.

    ``cache=True`` keeps decoded images and masks in memory (the datasets here are small and
    JPEG decoding dominates a CPU epoch otherwise).
    """

    def __init__(self, pairs: Sequence[Pair], transform: Optional[Callable] = None,
                 cache: bool = False) -> None:
        if not pairs:
            raise ValueError("dataset is empty: no (image, label) pairs found")
        for img, lbl in pairs:
            if not img.is_file():
                raise FileNotFoundError(f"image not found: {img}")
            if not lbl.is_file():
                raise FileNotFoundError(f"label not found: {lbl} (for image {img})")
        self.pairs = list(pairs)
        self.transform = transform
        self._cache = {} if cache else None

    def __len__(self) -> int:
        return len(self.pairs)

    def decode_label(self, path: Path) -> np.ndarray:
        raise NotImplementedError

    def load(self, index: int) -> Tuple[np.ndarray, np.ndarray]:
        """Raw (H, W, 3) uint8 image and (H, W) uint8 mask for ``index``."""
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        img_path, lbl_path = self.pairs[index]
        image, mask = read_rgb(img_path), self.decode_label(lbl_path)
        if image.shape[:2] != mask.shape:
            raise ValueError(f"size mismatch: {img_path} is {image.shape[:2]}, {lbl_path} is {mask.shape}")
        if self._cache is not None:
            self._cache[index] = (image, mask)
        return image, mask

    def __getitem__(self, index: int):
        image, mask = self.load(index)
        img_t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
        mask_t = torch.from_numpy(mask.astype(np.int64))
        if self.transform is not None:
            img_t, mask_t = self.transform(img_t, mask_t)
        return img_t, mask_t

    def stem(self, index: int) -> str:
        return self.pairs[index][0].stem


class CamVid(SegmentationDataset):
    """CamVid-11.

    SegNet layout: ``<root>/<split>/*.{png,jpg}`` + ``<root>/<split>annot/<stem>.png`` with values
    0-10 and 11 = void (mapped to 255). ``split`` may also be a list file of ``image_path
    label_path`` lines (the original project's layout).
    """

    NUM_CLASSES = 11

    def __init__(self, root, split: str = "train", transform=None, cache: bool = False) -> None:
        root = Path(root)
        if (root / "camvid").is_dir() and not (root / split).is_dir():
            root = root / "camvid"
        self.root = root
        split_path = Path(split)
        if split_path.suffix == ".txt" or split_path.is_file():
            pairs = _read_list_file(split_path if split_path.is_absolute() else
                                    (split_path if split_path.exists() else root / split), root)
        else:
            splits = ["train", "val", "test"] if split == "all" else [split]
            pairs = []
            for sp in splits:
                img_dir, ann_dir = root / sp, root / f"{sp}annot"
                if not img_dir.is_dir():
                    if split == "all":
                        continue
                    raise FileNotFoundError(f"CamVid split folder not found: {img_dir}")
                for img in sorted(p for p in img_dir.iterdir() if p.suffix.lower() in IMAGE_EXTS):
                    lbl = _find_image(ann_dir, img.stem)
                    if lbl is None:
                        raise FileNotFoundError(f"no label for {img} in {ann_dir}")
                    pairs.append((img, lbl))
        super().__init__(pairs, transform, cache)

    def decode_label(self, path: Path) -> np.ndarray:
        with Image.open(path) as im:
            raw = np.asarray(im)
        if raw.ndim == 3:  # some exports save the index map as RGB with equal channels
            raw = raw[..., 0]
        mask = raw.astype(np.uint8, copy=True)
        mask[raw >= self.NUM_CLASSES] = IGNORE_INDEX  # 11 = void
        return mask


class KittiRoad(SegmentationDataset):
    """KITTI road (training part): ``image_2/<cat>_<id>.{png,jpg}`` and ``gt_image_2/<cat>_road_<id>.png``.

    GT colours: magenta (255,0,255) road -> 1, red (255,0,0) not road -> 0, black (outside the valid
    area) -> 255. ``split``: train / val (the ``<split>.txt`` stem lists), all, or a path to a stem
    list.
    """

    def __init__(self, root, split: str = "train", transform=None, cache: bool = False) -> None:
        root = Path(root)
        if (root / "kitti_road").is_dir() and not (root / "image_2").is_dir():
            root = root / "kitti_road"
        self.root = root
        img_dir, gt_dir = root / "image_2", root / "gt_image_2"
        if not img_dir.is_dir():
            raise FileNotFoundError(f"KITTI road image folder not found: {img_dir}")
        if split == "all":
            stems = sorted(p.stem for p in img_dir.iterdir() if p.suffix.lower() in IMAGE_EXTS)
        else:
            list_file = Path(split) if Path(split).is_file() else root / f"{split}.txt"
            if not list_file.is_file():
                raise FileNotFoundError(f"KITTI road split {split!r}: no list file {list_file}")
            stems = list_file.read_text().split()
        pairs = []
        for stem in stems:
            img = _find_image(img_dir, stem)
            if img is None:
                raise FileNotFoundError(f"image {stem} not found in {img_dir}")
            cat, _, idx = stem.rpartition("_")
            gt = _find_image(gt_dir, f"{cat}_road_{idx}")
            if gt is None:
                raise FileNotFoundError(f"ground truth {cat}_road_{idx}.png not found in {gt_dir}")
            pairs.append((img, gt))
        super().__init__(pairs, transform, cache)

    def decode_label(self, path: Path) -> np.ndarray:
        rgb = read_rgb(path)
        mask = np.full(rgb.shape[:2], IGNORE_INDEX, np.uint8)
        valid = rgb[..., 0] > 127
        mask[valid] = 0
        mask[valid & (rgb[..., 2] > 127)] = 1
        return mask


class CamVidDrivable(CamVid):
    """CamVid frames in KITTI road's label space (road -> 1, other classes -> 0, void -> 255).

    A second camera (4:3, 480x360, Cambridge streets) for the drivable-area model.
    """

    ROAD_ID = 3  # CamVid-11 "road"

    def decode_label(self, path: Path) -> np.ndarray:
        raw = super().decode_label(path)
        mask = np.where(raw == IGNORE_INDEX, IGNORE_INDEX, 0).astype(np.uint8)
        mask[raw == self.ROAD_ID] = 1
        return mask


DATASET_CLASSES = {"camvid": CamVid, "kitti_road": KittiRoad, "camvid_drivable": CamVidDrivable}
# The label space (checkpoint classes) of each dataset: a model trained on a mix of sources is
# saved with the label space they share.
LABEL_SPACE = {"camvid": "camvid", "kitti_road": "kitti_road", "camvid_drivable": "kitti_road"}


def build_dataset(name: str, root, split: str, transform=None, cache: bool = False) -> SegmentationDataset:
    if name not in DATASET_CLASSES:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_CLASSES)}")
    return DATASET_CLASSES[name](root, split, transform=transform, cache=cache)
