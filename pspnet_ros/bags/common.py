"""The bag tools' one import (``from pspnet_ros.bags import common as bc``), ROS-free.

It holds the names of :mod:`.messages` (typestore, CDR, message builders, decoding, topics),
:mod:`.calibration` (intrinsics, CameraInfo) and :mod:`.storage` (plugins, readers, output folders).
"""

from pspnet_ros.class_info import class_info_json  # noqa: F401 (bc.class_info_json for pspnet bag)

from .messages import (  # noqa: F401
    IMAGE, COMPRESSED, CAMERA_INFO, STRING, IMAGE_TYPES, BagError, typestore, serialize,
    deserialize, stamp_ns, header, header_ns, image_msg, compressed_msg, string_msg,
    decode_image_msg, image_to_rgb, compressed_payload, compressed_format, compressed_size, decode_compressed,
    msg_to_rgb, join_topic, image_base_topic, topic_namespace, camera_info_topic, validate_topic)
from .calibration import (  # noqa: F401
    Intrinsics, KITTI_P2, DEFAULT_HFOV_DEG, default_intrinsics, camera_info_msg,
    scale_camera_info)
from .storage import (  # noqa: F401
    FORMATS, DISTROS, DEFAULT_DISTRO, check_distro, default_format, writer_version, finish_for_distro,
    _INFINITE, storage_plugin, bag_format, qos_profile, open_reader, ImageTopic,
    image_topics, partial_dir, atomic_bag_dir)
