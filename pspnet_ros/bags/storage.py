"""rosbag2 storage (ROS-free): storage plugins, metadata QoS, readers, the image topics of a
bag and crash-safe output folders."""

from __future__ import annotations

import logging
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Sequence

from .messages import IMAGE_TYPES, BagError

LOGGER = logging.getLogger(__name__)
FORMATS = ("mcap", "sqlite3")
# rosbag2's RMW_DURATION_INFINITE as written into metadata.yaml by `ros2 bag record`.
_INFINITE = (9223372036, 854775807)


# --------------------------------------------------------------------------- storage

def storage_plugin(fmt: str):
    from rosbags.rosbag2 import StoragePlugin

    if fmt not in FORMATS:
        raise BagError(f"unknown bag format {fmt!r}; choose mcap or sqlite3")
    return StoragePlugin.MCAP if fmt == "mcap" else StoragePlugin.SQLITE3


def bag_format(path: Path) -> str:
    """Storage identifier of an existing rosbag2 directory ('mcap' or 'sqlite3')."""
    meta = Path(path) / "metadata.yaml"
    if meta.is_file():
        import yaml

        info = yaml.safe_load(meta.read_text()).get("rosbag2_bagfile_information", {})
        ident = str(info.get("storage_identifier", ""))
        if ident in FORMATS:
            return ident
    files = sorted(Path(path).glob("*.mcap")) + sorted(Path(path).glob("*.db3"))
    if files:
        return "mcap" if files[0].suffix == ".mcap" else "sqlite3"
    raise BagError(f"{path} is not a rosbag2 directory (no metadata.yaml, .mcap or .db3)")


def qos_profile(*, reliable: bool = True, transient_local: bool = False, depth: int = 10):
    """A rosbags Qos as ``ros2 bag record`` writes offered QoS into metadata.yaml."""
    from rosbags.interfaces import (Qos, QosDurability, QosHistory, QosLiveliness,
                                    QosReliability, QosTime)

    inf = QosTime(*_INFINITE)
    return Qos(history=QosHistory.KEEP_LAST, depth=depth,
               reliability=QosReliability.RELIABLE if reliable else QosReliability.BEST_EFFORT,
               durability=(QosDurability.TRANSIENT_LOCAL if transient_local
                           else QosDurability.VOLATILE),
               deadline=inf, lifespan=inf, liveliness=QosLiveliness.AUTOMATIC,
               liveliness_lease_duration=inf, avoid_ros_namespace_conventions=False)


def open_reader(path: Path):
    """An opened rosbags Reader, with errors that name the bag."""
    from rosbags.rosbag2 import Reader

    path = Path(path)
    if not path.exists():
        raise BagError(f"bag {path} does not exist")
    if path.is_file():
        raise BagError(f"{path} is a file; a rosbag2 is the directory holding metadata.yaml")
    if not (path / "metadata.yaml").is_file():
        raise BagError(f"{path} has no metadata.yaml: not a complete rosbag2 (a bag that was "
                       "interrupted while recording can be repaired with `ros2 bag reindex`)")
    try:
        reader = Reader(path)
        reader.open()
    except Exception as exc:  # rosbags raises several unrelated types for broken bags
        raise BagError(f"cannot open bag {path}: {exc}") from exc
    return reader


@dataclass(frozen=True)
class ImageTopic:
    topic: str
    msgtype: str
    count: int


def image_topics(reader, requested: Sequence[str] = ()) -> List[ImageTopic]:
    """Image/CompressedImage topics of a bag, all of them or the ``requested`` ones."""
    found = {}
    for c in reader.connections:
        if c.msgtype in IMAGE_TYPES:
            prev = found.get(c.topic)
            found[c.topic] = ImageTopic(c.topic, c.msgtype, c.msgcount + (prev.count if prev else 0))
    if requested:
        missing = [t for t in requested if t not in found]
        if missing:
            raise BagError(f"image topic(s) {', '.join(missing)} not in {reader.path} "
                           f"(image topics there: {', '.join(sorted(found)) or 'none'})")
        return [found[t] for t in requested]
    if not found:
        topics = ", ".join(f"{c.topic} [{c.msgtype}]" for c in reader.connections) or "none"
        raise BagError(f"{reader.path} has no sensor_msgs/Image or CompressedImage topic "
                       f"(topics: {topics})")
    return [found[t] for t in sorted(found)]


def partial_dir(out: Path) -> Path:
    """Hidden work directory next to ``out`` (same filesystem, so the final rename is atomic)."""
    return out.parent / f".{out.name}.partial"


@contextmanager
def atomic_bag_dir(out: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield the path to write a bag at; when the body returns, the bag is renamed to ``out``.

    The bag is written as ``.<name>.partial/<name>`` (rosbags names the storage file after the
    bag directory, so the finished bag holds ``<name>.mcap`` / ``<name>.db3`` as ``ros2 bag``
    users expect). If the body raises, the work directory is removed and nothing appears at
    ``out``. A process killed outright (SIGKILL, power loss) leaves only the hidden work
    directory, which the next run replaces.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise BagError(f"{out} exists; pass --overwrite or choose another --out")
    work = partial_dir(out)
    if work.exists():
        LOGGER.warning("removing stale partial output %s from an earlier interrupted run", work)
        shutil.rmtree(work)
    work.mkdir(parents=True)
    try:
        yield work / out.name
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        (work / out.name).rename(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
