"""The node's Fast DDS profile (issue 24): input readers free each sample's buffer.

Without it, rmw_fastrtps' PREALLOCATED_WITH_REALLOC readers keep every payload buffer at the
largest size it ever held, and frames of changing sizes grow the node's memory without bound
(test/ros/test_fuzz.py measures that end to end).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from pspnet_ros.ros import middleware

NS = {"d": "http://www.eprosima.com"}


def _default(root: ET.Element, tag: str) -> ET.Element:
    found = [e for e in root.iter(f"{{{NS['d']}}}{tag}") if e.get("is_default_profile") == "true"]
    assert len(found) == 1, tag
    return found[0]


def test_profile_bounds_reader_memory_and_keeps_rmw_writer_defaults():
    root = ET.fromstring(middleware.PROFILE)
    reader = _default(root, "data_reader")
    # DYNAMIC: one buffer per sample, freed when the sample is taken or replaced, so a reader
    # holds only the samples in flight (not a pool of buffers grown to the largest frame).
    assert reader.find("d:historyMemoryPolicy", NS).text == "DYNAMIC"
    writer = _default(root, "data_writer")
    assert writer.find("d:historyMemoryPolicy", NS).text == "PREALLOCATED_WITH_REALLOC"
    assert writer.find("d:qos/d:publishMode/d:kind", NS).text == "SYNCHRONOUS"


def test_configure_sets_the_profile_before_init(tmp_path):
    env = {"ROS_DISTRO": "kilted"}
    settings = middleware.configure_fastdds(env, directory=tmp_path)
    # Fast DDS applies a memory policy from XML only when rmw_fastrtps is told to use XML QoS.
    assert env["RMW_FASTRTPS_USE_QOS_FROM_XML"] == "1"
    path = tmp_path / env["FASTDDS_DEFAULT_PROFILES_FILE"].rsplit("/", 1)[-1]
    assert path.read_text() == middleware.PROFILE
    assert settings == {k: v for k, v in env.items() if k != "ROS_DISTRO"}
    again = {"ROS_DISTRO": "kilted"}
    assert middleware.configure_fastdds(again, directory=tmp_path) == settings  # same file, rewritten only if changed


def test_a_users_own_configuration_or_another_rmw_is_left_alone(tmp_path):
    for env in ({"FASTDDS_DEFAULT_PROFILES_FILE": "/etc/mine.xml"},
                {"FASTRTPS_DEFAULT_PROFILES_FILE": "/etc/mine.xml"},
                {"RMW_FASTRTPS_USE_QOS_FROM_XML": "0"},
                {"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"}):
        before = dict(env)
        assert middleware.configure_fastdds(env, directory=tmp_path) == {}
        assert env == before
    env = {"RMW_IMPLEMENTATION": "rmw_fastrtps_dynamic_cpp", "ROS_DISTRO": "kilted"}
    assert middleware.configure_fastdds(env, directory=tmp_path)["RMW_FASTRTPS_USE_QOS_FROM_XML"] == "1"


def test_fast_dds_2_distros_keep_rmw_defaults(tmp_path):
    """Humble/Iron/Jazzy (Fast DDS 2.x) keep rmw's defaults.

    With XML QoS their service replies failed (Jazzy's lifecycle change_state).
    """
    for distro in ("humble", "jazzy"):
        env = {"ROS_DISTRO": distro}
        assert middleware.configure_fastdds(env, directory=tmp_path) == {} and env == {"ROS_DISTRO": distro}

