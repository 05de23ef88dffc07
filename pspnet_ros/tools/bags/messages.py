"""rosbag2 messages (ROS-free).

The typestore, CDR (de)serialization, message builders, decoding of image messages and the topic
conventions.

Messages are built and (de)serialized with the ``rosbags`` typestore for ROS 2 Kilted, whose
message definitions and RIHS01 type hashes equal those of the installed ROS 2 message packages
(checked by ``test/ros/test_replay.py``). Topic conventions follow
``image_transport``/``camera_info_manager``: raw images on ``T``, JPEG/PNG on ``T/compressed``,
the calibration on the sibling topic ``camera_info`` of ``T``.
"""

from __future__ import annotations

import functools
from typing import Optional, Tuple

import numpy as np

from pspnet_ros.errors import InputError
from pspnet_ros.inference.inputs import compressed_image_format, decode_cpu

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
STRING = "std_msgs/msg/String"
IMAGE_TYPES = (IMAGE, COMPRESSED)


class BagError(ValueError):
    """A bag cannot be read or written as asked: the message names the bag and what to do."""


@functools.lru_cache(maxsize=1)
def typestore():
    """Return the rosbags typestore matching the ROS 2 distribution we target (Kilted)."""
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
    """Return the header stamp of a deserialized message in nanoseconds."""
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


# --------------------------------------------------------------------------- decoding

def decode_image_msg(msg):
    """Convert a bag's sensor_msgs/Image to ``image_codec.DecodedImage`` (array, bgr, zero_copy).

    The same conversion the node uses (every encoding it accepts, ``step`` padding honoured).
    """
    from pspnet_ros.image_codec import decode_image

    return decode_image(msg.height, msg.width, msg.encoding, msg.step, msg.is_bigendian, msg.data)


def image_to_rgb(msg) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a sensor_msgs/Image (a view where the layout allows)."""
    img = decode_image_msg(msg)
    return np.ascontiguousarray(img.array[..., ::-1]) if img.bgr else img.array


def compressed_payload(msg) -> Tuple[bytes, str, int, int]:
    """Return ``(data, fmt, height, width)`` of a CompressedImage.

    The bytes are copied out once, and the format field, bytes and decompression-bomb limit checked
    by :func:`pspnet_ros.inference.inputs.compressed_image_format` (as the node does).
    """
    data = bytes(np.asarray(msg.data, dtype=np.uint8))
    fmt, h, w = compressed_image_format(msg.format, data)
    return data, fmt, h, w


def compressed_format(msg) -> str:
    """'jpeg' or 'png' for a CompressedImage (checked as in ``compressed_payload``)."""
    return compressed_payload(msg)[1]


def compressed_size(msg) -> Tuple[int, int]:
    """(height, width) a CompressedImage announces (checked as in ``compressed_payload``)."""
    return compressed_payload(msg)[2:]


def decode_compressed(msg) -> np.ndarray:
    """Decode a JPEG/PNG sensor_msgs/CompressedImage to (H, W, 3) uint8 RGB.

    The message is checked first, so a decompression bomb is refused before decoding.
    """
    data, fmt, h, w = compressed_payload(msg)
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
    """Return the raw image topic a transport topic belongs to: '/cam/image/compressed' -> '/cam/image'."""
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


