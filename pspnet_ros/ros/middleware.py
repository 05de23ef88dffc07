"""Fast DDS settings for the node's process: readers and writers free each sample's buffer.

Why (issue 24): rmw_fastrtps gives every reader and writer the PREALLOCATED_WITH_REALLOC
history memory policy. Its payload pool never gives a buffer back: each buffer grows to the
largest sample it has held and is kept for reuse, and the pool keeps as many buffers as were
ever in use at once. Frames of many sizes, as a broken driver or a hostile publisher sends
them, ratchet the pools up.

- Writers (the outputs, one per topic, each frame answered at its own size): 40,000 mutated
  CompressedImages grew RSS by +25 MB (+2.05 %) in steps as one pool buffer after another met
  a large frame. heaptrack saw no live allocation left behind (18.7 KB over the run),
  ``malloc_trim`` gave nothing back, and ``strace -k`` put the largest mapping still held in
  ``TopicPayloadPool::do_get_payload`` via ``DataWriterImpl::write``. With DYNAMIC writers (a
  buffer per sample, freed when the sample leaves the history) the same run gave +0.9 MB
  (+0.08 %), and the node's throughput at 200 Hz with every output on was unchanged.
- Readers (the camera input): heaptrack put +84 MB between 500 and 4,000 mutated raw images in
  ``TopicPayloadPool::do_get_payload`` called from ``StatefulReader::process_data_frag_msg``;
  100,000 compressed mutants would have grown RSS past +4.5 %. DYNAMIC readers (a buffer per
  sample, freed when taken) stop that and are the default on every distro (READER_MEMORY_VAR).
  Two things make them keep up with a
  camera faster than the node answers (1242x375 rgb8, every output on, 2-core CPU,
  benchmarks/ros_bench.py): glibc must serve the per-sample buffer from the heap (heap.py: with
  a 1 MiB mmap threshold each sample was mapped and page-faulted in: 3.8 answers/s at 60 Hz at
  depth 1), and the camera subscriptions keep 2 samples (qos.input_depth): at depth 1 a sample
  still arriving when the next one starts is evicted (200 Hz: 0.8 answers/s at depth 1, 22.8 at
  depth 2). DYNAMIC_REUSABLE ratchets like rmw's policy (+12 % over 30,000 raw
  mutants), and a reader sample limit pushed back on the publisher until its writes failed.
  ``PSPNET_ROS_READER_MEMORY=realloc`` restores rmw's reader policy at depth 1.

ROS-free: this runs before ``rclpy.init`` (the participant reads the profile when it is created).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Dict, MutableMapping, Optional

_PROFILE = """<?xml version="1.0" encoding="UTF-8" ?>
<!-- pspnet_ros segmentation node (pspnet_ros/ros/middleware.py): sample buffers freed (readers
     as PSPNET_ROS_READER_MEMORY says);
     everything else as rmw_fastrtps sets it without XML QoS. -->
<dds xmlns="http://www.eprosima.com">
  <profiles>
    <participant profile_name="pspnet_ros_participant" is_default_profile="true">
      <rtps>
        <builtin>
          <readerHistoryMemoryPolicy>PREALLOCATED_WITH_REALLOC</readerHistoryMemoryPolicy>
          <writerHistoryMemoryPolicy>PREALLOCATED_WITH_REALLOC</writerHistoryMemoryPolicy>
        </builtin>
      </rtps>
    </participant>
    <data_reader profile_name="pspnet_ros_reader" is_default_profile="true">
      <qos>
        <data_sharing>
          <kind>OFF</kind>
        </data_sharing>
      </qos>
      <historyMemoryPolicy>{reader_policy}</historyMemoryPolicy>
    </data_reader>
    <data_writer profile_name="pspnet_ros_writer" is_default_profile="true">
      <qos>
{publish_mode}        <data_sharing>
          <kind>OFF</kind>
        </data_sharing>
      </qos>
      <historyMemoryPolicy>DYNAMIC</historyMemoryPolicy>
    </data_writer>
  </profiles>
</dds>
"""
_PUBLISH_MODE = """        <publishMode>
          <kind>{kind}</kind>
        </publishMode>
"""
PUBLICATION_MODES = ("SYNCHRONOUS", "ASYNCHRONOUS", "AUTO")

# The input readers' memory: "dynamic" (the default on every distro: a buffer per sample, freed
# when taken, depth 2 in qos.input_depth: memory stays flat under malformed input of any size) or
# "realloc" (rmw's policy at depth 1: frames of changing sizes grow its buffer pool; see the
# module docstring). Chosen per process with this variable, before rclpy.init.
# For a few hours on 2026-12-07 Fast DDS 2.x (Humble, Jazzy) defaulted to "realloc": Jazzy's
# lifecycle change_state responses had gone unanswered with DYNAMIC readers. The cause was a test
# that leaked this profile into the environment of every later process, ros2 CLI and test clients
# included (fixed in 79de655); without the leak Jazzy's ROS layers pass with DYNAMIC readers.
READER_MEMORY_VAR = "PSPNET_ROS_READER_MEMORY"
READER_POLICIES = {"dynamic": "DYNAMIC", "realloc": "PREALLOCATED_WITH_REALLOC"}
DEFAULT_READER_MEMORY = "dynamic"


def publication_mode(environ: MutableMapping[str, str]) -> str:
    """Return the writers' publish mode as rmw_fastrtps reads it (RMW_FASTRTPS_PUBLICATION_MODE, else SYNCHRONOUS)."""
    mode = environ.get("RMW_FASTRTPS_PUBLICATION_MODE", "").strip()
    return mode if mode in PUBLICATION_MODES else "SYNCHRONOUS"


def reader_memory(environ: MutableMapping[str, str]) -> str:
    """Return the input readers' memory choice from PSPNET_ROS_READER_MEMORY (unset: DEFAULT_READER_MEMORY).

    Raises ValueError naming the choices for any other value (a typo must not silently pick one).
    """
    value = environ.get(READER_MEMORY_VAR, "").strip().lower() or DEFAULT_READER_MEMORY
    if value not in READER_POLICIES:
        raise ValueError(f"{READER_MEMORY_VAR}={environ[READER_MEMORY_VAR]!r} is not one of "
                         f"{', '.join(READER_POLICIES)}")
    return value


def profile_xml(mode: str = "SYNCHRONOUS", reader: str = DEFAULT_READER_MEMORY) -> str:
    """Return the node's Fast DDS profile; ``mode`` AUTO leaves the publish mode to Fast DDS, as rmw does."""
    if mode not in PUBLICATION_MODES:
        raise ValueError(f"publication mode {mode!r} is not one of {PUBLICATION_MODES}")
    if reader not in READER_POLICIES:
        raise ValueError(f"reader memory {reader!r} is not one of {', '.join(READER_POLICIES)}")
    return (_PROFILE.replace("{publish_mode}", "" if mode == "AUTO" else _PUBLISH_MODE.format(kind=mode))
            .replace("{reader_policy}", READER_POLICIES[reader]))


PROFILE = profile_xml()
# The node's profile files: PROFILE_PREFIX + "<uid>_<mode>_<reader>.xml" (profile_path).
PROFILE_PREFIX = "pspnet_ros_fastdds_"
PROFILE_VARS = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")
# Set by a user who configures Fast DDS: then theirs applies, not ours.
USER_SETTINGS = PROFILE_VARS + ("RMW_FASTRTPS_USE_QOS_FROM_XML",)


# Distros whose rmw_fastrtps is built on Fast DDS 2.x.
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
    # Fast DDS 3 (Kilted and later) reads FASTDDS_DEFAULT_PROFILES_FILE, Fast DDS 2.x (Humble,
    # Jazzy) only FASTRTPS_DEFAULT_PROFILES_FILE (Kilted's rmw warns that name is deprecated).
    # With XML QoS and no XML, every endpoint gets Fast DDS' bare defaults: on Jazzy the
    # lifecycle change_state replies then failed on the third cleanup.
    var = "FASTRTPS_DEFAULT_PROFILES_FILE" if fastdds2(environ) else "FASTDDS_DEFAULT_PROFILES_FILE"
    return {var: str(profile), "RMW_FASTRTPS_USE_QOS_FROM_XML": "1"}


def profile_path(directory: Optional[Path] = None, mode: str = "SYNCHRONOUS",
                 reader: str = DEFAULT_READER_MEMORY) -> Path:
    """Write the profile for publish ``mode`` and ``reader`` memory (once per content and user); return its path."""
    text = profile_xml(mode, reader)
    directory = Path(directory or tempfile.gettempdir())
    uid = os.getuid() if hasattr(os, "getuid") else 0
    path = directory / f"{PROFILE_PREFIX}{uid}_{mode.lower()}_{reader}.xml"
    try:
        if path.read_text() == text:
            return path
    except OSError:
        pass
    tmp = directory / f".{path.name}.{os.getpid()}"
    tmp.write_text(text)
    os.replace(tmp, path)  # atomic: another node starting now reads the old or the new file, whole
    return path


def dynamic_readers(environ: MutableMapping[str, str]) -> bool:
    """Return True when ``environ`` makes Fast DDS load this module's profile with DYNAMIC readers.

    False with a user's own profile, rmw's defaults or another RMW: then the readers are not ours
    to size (qos.input_depth keeps depth 1 there).
    """
    if not uses_fastdds(environ) or environ.get("RMW_FASTRTPS_USE_QOS_FROM_XML") != "1":
        return False
    names = [Path(environ.get(var) or "").name for var in PROFILE_VARS]
    return any(n.startswith(PROFILE_PREFIX) and n.endswith("_dynamic.xml") for n in names)


def configure_fastdds(environ: MutableMapping[str, str] = os.environ,
                      directory: Optional[Path] = None) -> Dict[str, str]:
    """Apply :func:`fastdds_env` to ``environ`` (call before rclpy.init); returns what was set."""
    if not uses_fastdds(environ) or any(environ.get(k) for k in USER_SETTINGS):
        return {}
    try:
        path = profile_path(directory, publication_mode(environ), reader_memory(environ))
    except OSError:  # no writable temp dir: run with rmw's defaults rather than not at all
        return {}
    settings = fastdds_env(environ, path)
    environ.update(settings)
    return settings
