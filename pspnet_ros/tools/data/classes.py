"""The one source of truth for class names, palettes, ignore index and normalization.

Training writes these into every checkpoint's metadata (``dataset_meta``); every consumer
(engine, node, CLIs) reads them back from the checkpoint, never from here. The built-in datasets
are defined here; a ``folder`` dataset (your own camera) brings its classes in ``classes.yaml``
(:func:`load_classes_yaml`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

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
    ignore_color: Optional[Tuple[int, int, int]] = None  # folder datasets with RGB masks

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
# A dataset whose classes are not built in: images/, masks/ and classes.yaml in one folder.
FOLDER = "folder"
CLASSES_FILE = "classes.yaml"
CLASSES_EXAMPLE = """classes:
  - {name: background, color: [0, 0, 0]}
  - {name: road, color: [128, 64, 128], drivable: true}
ignore_index: 255"""


class ClassesFileError(ValueError):
    """A classes.yaml is missing or malformed: the message names the file, the entry and the fix."""

    def __init__(self, path: Union[str, Path], problem: str) -> None:
        self.path = str(path)
        super().__init__(f"{path}: {problem}\nexpected, for example:\n{CLASSES_EXAMPLE}")


def _color(path: Path, where: str, value: Any) -> Tuple[int, int, int]:
    if (not isinstance(value, (list, tuple)) or len(value) != 3
            or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in value)):
        raise ClassesFileError(path, f"{where}: color must be three integers 0-255 [r, g, b], got {value!r}")
    return (int(value[0]), int(value[1]), int(value[2]))


def load_classes_yaml(path: Union[str, Path], name: str = FOLDER) -> DatasetInfo:
    """Read a ``classes.yaml``: the class of mask value i is the i-th entry of ``classes``.

    Keys: ``classes`` (a list of ``{name, color: [r, g, b], drivable: bool}``; drivable defaults to
    false), ``ignore_index`` (the mask value of unlabelled pixels, default 255) and optionally
    ``ignore_color`` (the colour of unlabelled pixels in RGB masks). Normalization is not here: it
    is the backbone's (training writes it).

    Raises:
        ClassesFileError: the file is missing, not YAML, or an entry is malformed.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ClassesFileError(path, "file not found (a folder dataset describes its classes in "
                                     f"{CLASSES_FILE} next to images/ and masks/)")
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ClassesFileError(path, f"not valid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise ClassesFileError(path, f"expected a mapping with a 'classes' list, got {type(doc).__name__}")
    unknown = sorted(set(doc) - {"classes", "ignore_index", "ignore_color"})
    if unknown:
        raise ClassesFileError(path, f"unknown key(s) {', '.join(map(str, unknown))} "
                                     "(known: classes, ignore_index, ignore_color)")
    entries = doc.get("classes")
    if not isinstance(entries, list) or len(entries) < 2:
        raise ClassesFileError(path, "'classes' must be a list of at least 2 classes (mask value i = entry i), "
                                     f"got {entries!r}")
    names: List[str] = []
    palette: List[Tuple[int, int, int]] = []
    drivable: List[str] = []
    for i, entry in enumerate(entries):
        where = f"classes[{i}]"
        if not isinstance(entry, dict):
            raise ClassesFileError(path, f"{where}: expected a mapping {{name, color, drivable}}, got {entry!r}")
        bad = sorted(set(entry) - {"name", "color", "drivable"})
        if bad:
            raise ClassesFileError(path, f"{where}: unknown key(s) {', '.join(map(str, bad))} "
                                         "(known: name, color, drivable)")
        cname = entry.get("name")
        if not isinstance(cname, str) or not cname.strip():
            raise ClassesFileError(path, f"{where}: 'name' must be a non-empty string, got {cname!r}")
        if cname in names:
            raise ClassesFileError(path, f"{where}: class name {cname!r} repeats classes[{names.index(cname)}]")
        if "color" not in entry:
            raise ClassesFileError(path, f"{where} ({cname}): 'color' [r, g, b] is missing")
        color = _color(path, f"{where} ({cname})", entry["color"])
        if color in palette:
            raise ClassesFileError(path, f"{where} ({cname}): color {list(color)} repeats "
                                         f"{names[palette.index(color)]!r}'s")
        flag = entry.get("drivable", False)
        if not isinstance(flag, bool):
            raise ClassesFileError(path, f"{where} ({cname}): 'drivable' must be true or false, got {flag!r}")
        names.append(cname)
        palette.append(color)
        if flag:
            drivable.append(cname)
    ignore = doc.get("ignore_index", IGNORE_INDEX)
    if (not isinstance(ignore, int) or isinstance(ignore, bool) or not len(names) <= ignore <= 255):
        raise ClassesFileError(path, f"ignore_index must be an integer from {len(names)} (after the class ids "
                                     f"0-{len(names) - 1}) to 255, got {ignore!r}")
    ignore_color = doc.get("ignore_color")
    if ignore_color is not None:
        ignore_color = _color(path, "ignore_color", ignore_color)
        if ignore_color in palette:
            raise ClassesFileError(path, f"ignore_color {list(ignore_color)} is also the color of "
                                         f"{names[palette.index(ignore_color)]!r}")
    return DatasetInfo(name=name, classes=tuple(names), palette=tuple(palette), drivable=tuple(drivable),
                       ignore_index=int(ignore), ignore_color=ignore_color)


def get_dataset_info(name: str, root: Optional[Union[str, Path]] = None) -> DatasetInfo:
    """Return a built-in dataset's classes, or a ``folder`` dataset's from ``<root>/classes.yaml``."""
    if name == FOLDER:
        if root is None:
            raise ValueError("dataset 'folder' needs its folder: set data.root (or --root)")
        return load_classes_yaml(Path(root) / CLASSES_FILE)
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}, {FOLDER}")
    return DATASETS[name]


def dataset_meta(name: str, root: Optional[Union[str, Path]] = None) -> Dict[str, object]:
    """Checkpoint metadata fields for a dataset (classes, palette, ignore index, mean/std).

    ``root`` is read for a ``folder`` dataset only (its ``classes.yaml``).
    """
    info = get_dataset_info(name, root)
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
