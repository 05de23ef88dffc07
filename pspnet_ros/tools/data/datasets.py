"""CamVid, KITTI road and folder (your own camera) datasets.

All return ``(image, mask)`` after the paired transform: by default ``image`` is a (3, H, W)
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

from .classes import CLASSES_FILE, FOLDER, IGNORE_INDEX, DatasetInfo, load_classes_yaml

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
        crop = getattr(self, "crop_aspect", None)
        if crop:
            image, mask = center_crop_to_aspect(image, mask, crop)
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


class FolderDatasetError(ValueError):
    """A folder dataset does not hold what it must: the message names each file and the fix."""


def _problem_list(title: str, items: Sequence[str], limit: int = 10) -> str:
    more = f"\n  ... and {len(items) - limit} more" if len(items) > limit else ""
    return f"{title} ({len(items)}):\n  " + "\n  ".join(items[:limit]) + more


def decode_folder_mask(path: Path, info: DatasetInfo) -> np.ndarray:
    """(H, W) uint8 class ids of one mask of a folder dataset.

    An indexed PNG (mode "P": the palette index) or a single-channel one (mode "L") holds the class
    id as its pixel value; an RGB(A) mask is mapped through the classes' colours (and
    ``ignore_color``), as a labelling tool exports it. Raises FolderDatasetError for values or
    colours that are no class (naming the file, the values and the valid ones).
    """
    with Image.open(path) as im:
        mode = im.mode
        if mode in ("P", "L", "I", "I;16"):
            raw = np.asarray(im)
        elif mode in ("RGB", "RGBA"):
            raw = None
            rgb = np.asarray(im.convert("RGB"))
        else:
            raise FolderDatasetError(f"mask {path}: PNG mode {mode!r} is not a label image; save masks as "
                                     "indexed (mode P) or 8-bit single-channel (mode L) PNGs, class id = pixel "
                                     "value, or as RGB in the classes' colours")
    k = info.num_classes
    if raw is not None:
        bad = np.unique(raw[(raw >= k) & (raw != info.ignore_index)])
        if bad.size:
            shown = ", ".join(str(int(v)) for v in bad[:10]) + (", ..." if bad.size > 10 else "")
            raise FolderDatasetError(
                f"mask {path}: class id(s) {shown} not in {CLASSES_FILE} (valid: 0-{k - 1} for "
                f"{', '.join(info.classes)}; {info.ignore_index} = ignore_index, unlabelled)")
        return raw.astype(np.uint8)
    code = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
    colors = [(c, i) for i, c in enumerate(info.palette)]
    if info.ignore_color is not None:
        colors.append((info.ignore_color, info.ignore_index))
    keys = np.array([(r << 16) | (g << 8) | b for (r, g, b), _ in colors], np.int32)
    values = np.array([v for _, v in colors], np.uint8)
    order = np.argsort(keys)
    keys, values = keys[order], values[order]
    pos = np.clip(np.searchsorted(keys, code), 0, len(keys) - 1)
    known = keys[pos] == code
    if not bool(known.all()):
        bad = np.unique(code[~known])
        shown = ", ".join(str([int(c) >> 16, (int(c) >> 8) & 255, int(c) & 255]) for c in bad[:5])
        raise FolderDatasetError(
            f"mask {path}: RGB colour(s) {shown}{', ...' if bad.size > 5 else ''} are no class colour in "
            f"{CLASSES_FILE} (classes: " + ", ".join(f"{n} {list(c)}" for n, c in zip(info.classes, info.palette))
            + (f"; ignore_color {list(info.ignore_color)}" if info.ignore_color else "; no ignore_color set") + ")")
    return values[pos]


class FolderDataset(SegmentationDataset):
    """Your own frames: ``<root>/images/<stem>.{png,jpg}``, ``<root>/masks/<stem>.png``, ``<root>/classes.yaml``.

    ``split``: ``all`` (every image), a name whose stem list ``<root>/<split>.txt`` exists (one
    stem per line, e.g. train.txt and val.txt), or a path to such a list. The folder is checked
    when the dataset is built, and every problem is reported at once (FolderDatasetError): masks
    without an image, images of the split without a mask, listed stems without an image, a mask
    of another size than its image, class ids or colours that classes.yaml does not define.
    """

    def __init__(self, root, split: str = "train", transform=None, cache: bool = False,
                 validate: bool = True) -> None:
        root = Path(root)
        self.root = root
        self.info = load_classes_yaml(root / CLASSES_FILE)
        img_dir, mask_dir = root / "images", root / "masks"
        for d in (img_dir, mask_dir):
            if not d.is_dir():
                raise FolderDatasetError(f"folder dataset {root}: no {d.name}/ folder (expected images/<stem>.png|jpg, "
                                         f"masks/<stem>.png and {CLASSES_FILE})")
        images = {p.stem: p for p in sorted(img_dir.iterdir()) if p.suffix.lower() in IMAGE_EXTS}
        masks = {p.stem: p for p in sorted(mask_dir.iterdir()) if p.suffix.lower() == ".png"}
        problems = []
        orphans = sorted(set(masks) - set(images))
        if orphans:
            problems.append(_problem_list(f"masks without an image in {img_dir}",
                                          [str(masks[s]) for s in orphans]))
        if split == "all":
            stems = sorted(images)
        else:
            list_file = Path(split) if Path(split).is_file() else root / f"{split}.txt"
            if not list_file.is_file():
                raise FolderDatasetError(f"folder dataset {root}: split {split!r} needs the stem list {list_file} "
                                         "(one image stem per line), or use the split 'all'")
            stems = [ln.strip() for ln in list_file.read_text().splitlines()
                     if ln.strip() and not ln.strip().startswith("#")]
            if not stems:
                raise FolderDatasetError(f"folder dataset {root}: {list_file} lists no stems")
            unknown = [s for s in stems if s not in images]
            if unknown:
                problems.append(_problem_list(f"stems in {list_file} without an image in {img_dir}", unknown))
            stems = [s for s in stems if s in images]
        unlabelled = [s for s in stems if s not in masks]
        if unlabelled:
            problems.append(_problem_list(f"images without a mask (expected {mask_dir}/<stem>.png)",
                                          [str(images[s]) for s in unlabelled]))
        pairs = [(images[s], masks[s]) for s in stems if s in masks]
        if validate and not problems:
            problems += self._check_pairs(pairs)
        if problems:
            raise FolderDatasetError(f"folder dataset {root} (split {split}):\n" + "\n".join(problems))
        if not pairs:
            raise FolderDatasetError(f"folder dataset {root}: split {split!r} has no images")
        super().__init__(pairs, transform, cache)

    def _check_pairs(self, pairs: Sequence[Pair]) -> List[str]:
        sizes, labels = [], []
        for img, mask in pairs:
            with Image.open(img) as a, Image.open(mask) as b:
                if a.size != b.size:
                    sizes.append(f"{mask} is {b.size[0]}x{b.size[1]} but its image {img} is {a.size[0]}x{a.size[1]}")
                    continue
            try:
                decode_folder_mask(mask, self.info)
            except FolderDatasetError as exc:
                labels.append(str(exc))
        out = []
        if sizes:
            out.append(_problem_list("masks whose size differs from their image (width x height)", sizes))
        if labels:
            out.append(_problem_list("masks with values that are no class", labels))
        return out

    def decode_label(self, path: Path) -> np.ndarray:
        return decode_folder_mask(path, self.info)


DATASET_CLASSES = {"camvid": CamVid, "kitti_road": KittiRoad, "camvid_drivable": CamVidDrivable,
                   FOLDER: FolderDataset}
# The label space (checkpoint classes) of each dataset: a model trained on a mix of sources is
# saved with the label space they share. A folder's is its own classes.yaml.
LABEL_SPACE = {"camvid": "camvid", "kitti_road": "kitti_road", "camvid_drivable": "kitti_road", FOLDER: FOLDER}


def parse_aspect(text: str) -> float:
    """Return width / height of ``"16:9"`` (or ``"1.78"``); a specific error otherwise."""
    try:
        if ":" in str(text):
            w, h = (float(v) for v in str(text).split(":"))
        else:
            w, h = float(text), 1.0
    except ValueError:
        raise ValueError(f"aspect {text!r}: expected W:H, e.g. 16:9, or a number") from None
    if not (w > 0 and h > 0):
        raise ValueError(f"aspect {text!r} must be positive")
    return w / h


def center_crop_to_aspect(image: np.ndarray, mask: np.ndarray, aspect: float) -> Tuple[np.ndarray, np.ndarray]:
    """Crop the centre of a frame and its mask to width/height ``aspect``.

    Another camera's field of view from the same pictures: e.g. 16:9 frames out of KITTI's
    3.3:1 ones, for checks at a shape no shipped dataset has.
    """
    h, w = mask.shape[:2]
    if w / h > aspect:  # too wide: keep the height
        cw = max(1, int(round(h * aspect)))
        x0 = (w - cw) // 2
        return image[:, x0:x0 + cw], mask[:, x0:x0 + cw]
    ch = max(1, int(round(w / aspect)))
    y0 = (h - ch) // 2
    return image[y0:y0 + ch], mask[y0:y0 + ch]


def build_dataset(name: str, root, split: str, transform=None, cache: bool = False,
                  crop_aspect: Optional[float] = None) -> SegmentationDataset:
    """Build dataset ``name``; ``crop_aspect`` (width/height) centre-crops every frame and mask to it."""
    if name not in DATASET_CLASSES:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_CLASSES)}")
    ds = DATASET_CLASSES[name](root, split, transform=transform, cache=cache)
    ds.crop_aspect = crop_aspect
    return ds
