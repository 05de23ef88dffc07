"""Fast DDS settings for the node's process: readers free each sample's buffer when done with it.

Why (issue 24): rmw_fastrtps gives every reader the PREALLOCATED_WITH_REALLOC history memory
policy. Its payload pool never gives a buffer back: each buffer grows to the largest sample it
has held and is kept for reuse, and large (fragmented) samples that arrive while the executor
is busy need more buffers at once. Frames of many sizes, as a broken driver or a hostile
publisher sends them, then ratchet the pool up: measured with heaptrack, +84 MB between 500 and
4,000 mutated images, all in ``TopicPayloadPool::do_get_payload`` called from
``StatefulReader::process_data_frag_msg``; the node's RSS grew ~25-45 MB per 1,000 mutants
and kept growing (+363 MB after 14,000). With DYNAMIC readers (a buffer per sample, freed when
the sample is taken or replaced) the pool holds only the samples in flight and RSS stays flat.

Only the reader policy changes; writers keep what rmw_fastrtps sets (synchronous publication,
PREALLOCATED_WITH_REALLOC). Fast DDS applies a memory policy from XML only with
``RMW_FASTRTPS_USE_QOS_FROM_XML=1``; QoS the node sets in code (reliability, depth, durability)
still win over the profile. A user's own Fast DDS configuration (any of the variables in
USER_SETTINGS) or another RMW is left alone.

ROS-free: this runs before ``rclpy.init`` (the participant reads the profile when it is created).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Dict, MutableMapping, Optional

PROFILE = """<?xml version="1.0" encoding="UTF-8" ?>
<!-- pspnet_ros segmentation node (pspnet_ros/ros/middleware.py): readers free sample buffers. -->
<dds xmlns="http://www.eprosima.com">
  <profiles>
    <data_reader profile_name="pspnet_ros_reader" is_default_profile="true">
      <historyMemoryPolicy>DYNAMIC</historyMemoryPolicy>
    </data_reader>
    <data_writer profile_name="pspnet_ros_writer" is_default_profile="true">
      <qos>
        <publishMode>
          <kind>SYNCHRONOUS</kind>
        </publishMode>
      </qos>
      <historyMemoryPolicy>PREALLOCATED_WITH_REALLOC</historyMemoryPolicy>
    </data_writer>
  </profiles>
</dds>
"""
# Set by a user who configures Fast DDS: then theirs applies, not ours.
USER_SETTINGS = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE",
                 "RMW_FASTRTPS_USE_QOS_FROM_XML")


# Distros whose rmw_fastrtps is built on Fast DDS 2.x. There, with RMW_FASTRTPS_USE_QOS_FROM_XML=1
# the XML profile also shapes the service endpoints, and the lifecycle node's change_state
# replies failed after a few transitions on Jazzy (Fast DDS 2.14: "failed to send response:
# cannot publish data"). The reader-memory fix is applied on Fast DDS 3 (Kilted and later) only,
# where it was measured (issue 24).
FASTDDS2_DISTROS = ("humble", "iron", "jazzy")


def fastdds2(environ: MutableMapping[str, str]) -> bool:
    """Return True on a distro whose Fast DDS is 2.x (ROS_DISTRO, else the installed rclpy wheel)."""
    distro = environ.get("ROS_DISTRO", "").strip().lower()
    if distro:
        return distro in FASTDDS2_DISTROS
    from importlib.metadata import PackageNotFoundError, version

    for name in FASTDDS2_DISTROS:
        try:
            version(f"ros-{name}-rclpy")
            return True
        except PackageNotFoundError:
            continue
    return False


def uses_fastdds(environ: MutableMapping[str, str]) -> bool:
    """Return True when the process will use rmw_fastrtps (the default RMW when none is named)."""
    rmw = environ.get("RMW_IMPLEMENTATION", "")
    return not rmw or rmw.startswith("rmw_fastrtps")


def fastdds_env(environ: MutableMapping[str, str], profile: Path) -> Dict[str, str]:
    """Return the variables that make Fast DDS load ``profile``.

    Empty when the user configured Fast DDS (USER_SETTINGS) or uses another RMW.
    """
    if not uses_fastdds(environ) or any(environ.get(k) for k in USER_SETTINGS):
        return {}
    return {"FASTDDS_DEFAULT_PROFILES_FILE": str(profile), "RMW_FASTRTPS_USE_QOS_FROM_XML": "1"}


def profile_path(directory: Optional[Path] = None) -> Path:
    """Write PROFILE (once per content and user) and return its path."""
    directory = Path(directory or tempfile.gettempdir())
    path = directory / f"pspnet_ros_fastdds_{os.getuid() if hasattr(os, 'getuid') else 0}.xml"
    try:
        if path.read_text() == PROFILE:
            return path
    except OSError:
        pass
    tmp = directory / f".{path.name}.{os.getpid()}"
    tmp.write_text(PROFILE)
    os.replace(tmp, path)  # atomic: another node starting now reads the old or the new file, whole
    return path


def configure_fastdds(environ: MutableMapping[str, str] = os.environ,
                      directory: Optional[Path] = None) -> Dict[str, str]:
    """Apply :func:`fastdds_env` to ``environ`` (call before rclpy.init); returns what was set."""
    if not uses_fastdds(environ) or any(environ.get(k) for k in USER_SETTINGS) or fastdds2(environ):
        return {}
    try:
        path = profile_path(directory)
    except OSError:  # no writable temp dir: run with rmw's defaults rather than not at all
        return {}
    settings = fastdds_env(environ, path)
    environ.update(settings)
    return settings
