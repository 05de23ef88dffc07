"""rosbag2 helpers shared by ``pspnet make-bag``, ``pspnet bag``, replay and the demo (ROS-free).

Messages are built and (de)serialized with the ``rosbags`` typestore for ROS 2 Kilted, whose
message definitions and RIHS01 type hashes equal those of the installed ROS 2 message packages
(checked by ``test/ros/test_replay.py``), so the bags written here read back with
``ros2 bag info``/``ros2 bag play`` on a real install, with either storage plugin.

Topic conventions follow ``image_transport``/``camera_info_manager``: raw images on ``T``,
JPEG/PNG on ``T/compressed``, the calibration on the sibling topic ``camera_info`` of ``T``.
"""

from __future__ import annotations

import functools
import logging
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np

from pspnet_ros.camera_info import scale_camera_info_fields
from pspnet_ros.class_info import class_info_json  # noqa: F401 (bc.class_info_json for pspnet bag)
from pspnet_ros.errors import InputError
from pspnet_ros.inference.inputs import compressed_image_format, decode_cpu

LOGGER = logging.getLogger(__name__)

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
STRING = "std_msgs/msg/String"
IMAGE_TYPES = (IMAGE, COMPRESSED)
FORMATS = ("mcap", "sqlite3")
# rosbag2's RMW_DURATION_INFINITE as written into metadata.yaml by `ros2 bag record`.
_INFINITE = (9223372036, 854775807)


class BagError(ValueError):
    """A bag cannot be read or written as asked: the message names the bag and what to do."""


@functools.lru_cache(maxsize=1)
def typestore():
    """The rosbags typestore matching the ROS 2 distribution we target (Kilted)."""
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_KILTED)


def serialize(msg) -> bytes:
    """CDR (little endian, with the 4-byte encapsulation header rmw uses) of a typestore msg."""
    return bytes(typestore().serialize_cdr(msg, msg.__msgtype__))


def deserialize(data: bytes, msgtype: str):
    return typestore().deserialize_cdr(data, msgtype)


# --------------------------------------------------------------------------- message builders

def stamp_ns(start_ns: int, index: int, rate_hz: float) -> int:
    """Stamp of frame ``index`` in a stream starting at ``start_ns`` at ``rate_hz`` (exact ns)."""
    return int(start_ns) + int(round(index * 1e9 / rate_hz))


def header(stamp: int, frame_id: str):
    t = typestore().types
    sec, nsec = divmod(int(stamp), 1_000_000_000)
    return t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=sec, nanosec=nsec),
                                    frame_id=frame_id)


def header_ns(msg) -> int:
    """The header stamp of a deserialized message in nanoseconds."""
    return int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)


def image_msg(array: np.ndarray, stamp: int, frame_id: str, encoding: Optional[str] = None):
    """sensor_msgs/Image from an (H, W, 3) uint8 RGB array (rgb8) or an (H, W) uint8 one (mono8).

    ``step`` is the dense row size; the data is copied once into the message buffer.
    """
    array = np.ascontiguousarray(array)
    if array.dtype != np.uint8:
        raise InputError(f"image array must be uint8, got {array.dtype}")
    if array.ndim == 2:
        encoding = encoding or "mono8"
        channels = 1
    elif array.ndim == 3 and array.shape[2] in (3, 4):
        channels = array.shape[2]
        encoding = encoding or ("rgb8" if channels == 3 else "rgba8")
    else:
        raise InputError(f"image array must be (H, W) or (H, W, 3|4), got shape {array.shape}")
    h, w = array.shape[:2]
    return typestore().types[IMAGE](
        header=header(stamp, frame_id), height=h, width=w, encoding=encoding, is_bigendian=0,
        step=w * channels, data=array.reshape(-1))


def compressed_msg(data: bytes, fmt: str, stamp: int, frame_id: str):
    """sensor_msgs/CompressedImage; ``fmt`` is "jpeg" or "png" as image_transport writes it."""
    return typestore().types[COMPRESSED](header=header(stamp, frame_id), format=fmt,
                                         data=np.frombuffer(data, dtype=np.uint8))


def string_msg(text: str):
    return typestore().types[STRING](data=text)


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole model of a camera at ``width`` x ``height``; ``d`` = plumb_bob k1 k2 p1 p2 k3."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    d: Tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 0.0)
    tx: float = 0.0  # P[0,3] = -fx * baseline for the right camera of a stereo pair
    source: str = "default"

    def scaled(self, width: int, height: int) -> "Intrinsics":
        """The same camera resampled to ``width`` x ``height`` (ROS convention: K, P scale)."""
        sx, sy = width / self.width, height / self.height
        return Intrinsics(width, height, self.fx * sx, self.fy * sy, self.cx * sx, self.cy * sy,
                          self.d, self.tx * sx, self.source)


# KITTI's left colour camera (P2 of the 2011_09_26 calibration, which the road benchmark's
# um/umm/uu frames share up to a pixel): rectified images, so no distortion; P2[0,3] is the
# offset of camera 2 from the reference camera 0.
KITTI_P2 = Intrinsics(1242, 375, 721.5377, 721.5377, 609.5593, 172.854, tx=44.85728,
                      source="kitti_p2")
# Anything else: a 60 degree horizontal field of view, square pixels, centred principal point.
DEFAULT_HFOV_DEG = 60.0


def default_intrinsics(width: int, height: int) -> Intrinsics:
    fx = (width / 2.0) / np.tan(np.radians(DEFAULT_HFOV_DEG) / 2.0)
    return Intrinsics(width, height, float(fx), float(fx), width / 2.0, height / 2.0,
                      source=f"default_hfov{DEFAULT_HFOV_DEG:g}")


def camera_info_msg(intr: Intrinsics, stamp: int, frame_id: str):
    t = typestore().types
    k = np.array([intr.fx, 0, intr.cx, 0, intr.fy, intr.cy, 0, 0, 1], dtype=np.float64)
    p = np.array([intr.fx, 0, intr.cx, intr.tx, 0, intr.fy, intr.cy, 0, 0, 0, 1, 0],
                 dtype=np.float64)
    return t[CAMERA_INFO](
        header=header(stamp, frame_id), height=intr.height, width=intr.width,
        distortion_model="plumb_bob", d=np.array(intr.d, dtype=np.float64), k=k,
        r=np.eye(3, dtype=np.float64).reshape(-1), p=p, binning_x=0, binning_y=0,
        roi=t["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0,
                                                 do_rectify=False))


def scale_camera_info(msg, image_size: Tuple[int, int], out_size: Tuple[int, int]):
    """A rosbags CameraInfo (header kept) for images resized from ``image_size`` to
    ``out_size`` (both (h, w)): the node's scaling, :func:`pspnet_ros.camera_info.scale_camera_info_fields`."""
    t = typestore().types
    f = scale_camera_info_fields(msg, image_size, out_size)
    roi = t["sensor_msgs/msg/RegionOfInterest"](x_offset=f.roi_x_offset, y_offset=f.roi_y_offset,
                                                height=f.roi_height, width=f.roi_width,
                                                do_rectify=f.roi_do_rectify)
    return t[CAMERA_INFO](header=msg.header, height=f.height, width=f.width,
                          distortion_model=f.distortion_model, d=f.d, k=f.k, r=f.r, p=f.p,
                          binning_x=f.binning_x, binning_y=f.binning_y, roi=roi)


# --------------------------------------------------------------------------- decoding

def decode_image_msg(msg):
    """A bag's sensor_msgs/Image -> ``image_codec.DecodedImage`` (array, bgr, zero_copy).

    The same conversion the node uses (every encoding it accepts, ``step`` padding honoured).
    """
    from pspnet_ros.image_codec import decode_image

    return decode_image(msg.height, msg.width, msg.encoding, msg.step, msg.is_bigendian, msg.data)


def image_to_rgb(msg) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a sensor_msgs/Image (a view where the layout allows)."""
    img = decode_image_msg(msg)
    return np.ascontiguousarray(img.array[..., ::-1]) if img.bgr else img.array


def compressed_format(msg) -> str:
    """'jpeg' or 'png' for a CompressedImage: format field, bytes and decompression-bomb limit
    checked by :func:`pspnet_ros.inference.inputs.compressed_image_format` (as the node does)."""
    return compressed_image_format(msg.format, bytes(np.asarray(msg.data, dtype=np.uint8)))[0]


def compressed_size(msg) -> Tuple[int, int]:
    """(height, width) a CompressedImage announces (checked as in ``compressed_format``)."""
    _, h, w = compressed_image_format(msg.format, bytes(np.asarray(msg.data, dtype=np.uint8)))
    return h, w


def decode_compressed(msg) -> np.ndarray:
    """(H, W, 3) uint8 RGB from a JPEG/PNG sensor_msgs/CompressedImage (checked first, so a
    decompression bomb is refused before decoding)."""
    data = bytes(np.asarray(msg.data, dtype=np.uint8))
    fmt, h, w = compressed_image_format(msg.format, data)
    return np.ascontiguousarray(decode_cpu(data, fmt, h, w)[:, :, ::-1])


def msg_to_rgb(msg, msgtype: str) -> np.ndarray:
    if msgtype == IMAGE:
        return image_to_rgb(msg)
    if msgtype == COMPRESSED:
        return decode_compressed(msg)
    raise InputError(f"{msgtype} is not an image type")


# --------------------------------------------------------------------------- topics

def join_topic(ns: str, name: str) -> str:
    ns = "/" + ns.strip("/") if ns.strip("/") else ""
    return f"{ns}/{name.strip('/')}"


def image_base_topic(topic: str, msgtype: str = IMAGE) -> str:
    """The raw image topic a transport topic belongs to: '/cam/image/compressed' -> '/cam/image'."""
    if msgtype == COMPRESSED and topic.rstrip("/").endswith("/compressed"):
        return topic.rstrip("/")[: -len("/compressed")] or "/"
    return topic


def topic_namespace(topic: str) -> str:
    """Namespace of a topic: '/camera/image_raw' -> '/camera', '/image' -> ''."""
    parent = topic.rstrip("/").rsplit("/", 1)[0]
    return parent


def camera_info_topic(image_topic: str, msgtype: str = IMAGE) -> str:
    """Sibling ``camera_info`` of an image topic (camera_info_manager convention)."""
    return join_topic(topic_namespace(image_base_topic(image_topic, msgtype)), "camera_info")


def validate_topic(topic: str) -> str:
    import re

    if not re.fullmatch(r"(/[A-Za-z_][A-Za-z0-9_]*)+", topic):
        raise BagError(f"invalid topic name {topic!r}: use an absolute ROS name like "
                       "/camera/image_raw (letters, digits, underscores)")
    return topic


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
