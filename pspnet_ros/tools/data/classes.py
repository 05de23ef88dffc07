"""The one source of truth for class names, palettes, ignore index and normalization.

Training writes these into every checkpoint's metadata (``dataset_meta``); every consumer
(engine, node, CLIs) reads them back from the checkpoint, never from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Tuple

IGNORE_INDEX = 255
# ImageNet statistics, in [0, 1] RGB: models are trained from scratch here, but keeping the
# common convention means fine-tuning from torchvision weights elsewhere needs no change.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    classes: Tuple[str, ...]
    palette: Tuple[Tuple[int, int, int], ...]
    drivable: Tuple[str, ...]
    ignore_index: int = IGNORE_INDEX
    mean: Tuple[float, float, float] = IMAGENET_MEAN
    std: Tuple[float, float, float] = IMAGENET_STD

    @property
    def num_classes(self) -> int:
        return len(self.classes)


CAMVID = DatasetInfo(
    name="camvid",
    classes=("sky", "building", "pole", "road", "sidewalk", "tree", "sign_symbol", "fence",
             "car", "pedestrian", "bicyclist"),
    # The colours of the original CamVid label images.
    palette=((128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (0, 0, 192),
             (128, 128, 0), (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0),
             (0, 128, 192)),
    drivable=("road",),
)

KITTI_ROAD = DatasetInfo(
    name="kitti_road",
    classes=("not_road", "road"),
    # KITTI's ground-truth colours: red for not-road, magenta for road.
    palette=((255, 0, 0), (255, 0, 255)),
    drivable=("road",),
)

DATASETS: Dict[str, DatasetInfo] = {d.name: d for d in (CAMVID, KITTI_ROAD)}


def get_dataset_info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return DATASETS[name]


def dataset_meta(name: str) -> Dict[str, object]:
    """Checkpoint metadata fields for a dataset (classes, palette, ignore index, mean/std)."""
    info = get_dataset_info(name)
    return {
        "dataset": info.name,
        "classes": list(info.classes),
        "palette": [list(c) for c in info.palette],
        "ignore_index": info.ignore_index,
        "mean": list(info.mean),
        "std": list(info.std),
        "drivable_classes": list(info.drivable),
    }


def palette_list(meta: Dict[str, object]) -> List[Tuple[int, int, int]]:
    return [tuple(int(v) for v in c) for c in meta["palette"]]  # type: ignore[union-attr]
