"""rosbag2 storage (ROS-free): plugins, metadata, readers, output folders.

Storage plugins, offered QoS in metadata, the metadata version per ROS 2 distro, readers, the
image topics of a bag and crash-safe output folders.
"""

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
# rosbag2 metadata.yaml version each ROS 2 distro reads: Humble (rosbag2 0.15) knows up to 5;
# Jazzy and Kilted read 9, which rosbags writes. 6 added custom_data, 7 type_description_hash,
# 8 ros_distro, 9 offered_qos_profiles as a list instead of a YAML string.
DISTRO_METADATA_VERSION = {"humble": 5, "jazzy": 9, "kilted": 9}
DISTROS = tuple(DISTRO_METADATA_VERSION)
DEFAULT_DISTRO = "jazzy"  # metadata v9: Jazzy and Kilted; --distro humble for Humble
# Humble's default storage plugin is sqlite3 (mcap needs ros-humble-rosbag2-storage-mcap).
DISTRO_DEFAULT_FORMAT = {"humble": "sqlite3", "jazzy": "mcap", "kilted": "mcap"}
_V5_TOPIC_KEYS = ("name", "type", "serialization_format", "offered_qos_profiles")
_V5_KEYS = ("version", "storage_identifier", "duration", "starting_time", "message_count",
            "topics_with_message_count", "compression_format", "compression_mode",
            "relative_file_paths", "files")
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
    """Build a rosbags Qos as ``ros2 bag record`` writes offered QoS into metadata.yaml."""
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
    """Open a rosbags Reader, with errors that name the bag."""
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


def check_distro(distro: str) -> int:
    """Return the metadata version for ``distro``; BagError names the choices."""
    if distro not in DISTRO_METADATA_VERSION:
        raise BagError(f"unknown ROS 2 distro {distro!r}; choose one of {', '.join(DISTROS)}")
    return DISTRO_METADATA_VERSION[distro]


def default_format(distro: str) -> str:
    """Return the storage plugin a bag for ``distro`` uses unless --format says otherwise."""
    check_distro(distro)
    return DISTRO_DEFAULT_FORMAT[distro]


def writer_version(distro: str) -> int:
    """Return the version for rosbags' Writer (8 or 9); :func:`finish_for_distro` goes lower."""
    return max(8, min(9, check_distro(distro)))


def finish_for_distro(bag: Path, distro: str) -> None:
    """Rewrite a closed bag's metadata for ``distro`` (a no-op for Jazzy and Kilted).

    For Humble: metadata.yaml becomes version 5 (the keys of later versions removed; the QoS
    profiles stay the YAML string that version 8 and Humble's rosbag2 both write), and a
    sqlite3 file gets schema version 3 with the same metadata, as Humble's sqlite3 plugin knows.
    """
    import sqlite3

    import yaml

    version = check_distro(distro)
    if version >= 8:
        return
    path = Path(bag) / "metadata.yaml"
    doc = yaml.safe_load(path.read_text())
    info = doc["rosbag2_bagfile_information"]
    if info.get("version") != 8:
        raise BagError(f"{bag}: expected a version-8 bag to convert, found {info.get('version')}")
    for twc in info["topics_with_message_count"]:
        meta = twc["topic_metadata"]
        twc["topic_metadata"] = {k: meta[k] for k in _V5_TOPIC_KEYS if k in meta}
    info = {k: info[k] for k in _V5_KEYS if k in info}
    info["version"] = version
    path.write_text(yaml.safe_dump({"rosbag2_bagfile_information": info}, sort_keys=False))
    if info["storage_identifier"] == "sqlite3":
        for rel in info["relative_file_paths"]:
            con = sqlite3.connect(Path(bag) / rel)
            try:
                with con:
                    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
                    if "schema" in tables:
                        con.execute("UPDATE schema SET schema_version = 3, ros_distro = ?", (distro,))
                    if "metadata" in tables:
                        con.execute("UPDATE metadata SET metadata_version = ?, metadata = ?",
                                    (version, yaml.safe_dump(info, sort_keys=False)))
            finally:
                con.close()


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
