"""The node's Fast DDS profile (issue 24): input readers free each sample's buffer.

Without it, rmw_fastrtps' PREALLOCATED_WITH_REALLOC readers keep every payload buffer at the
largest size it ever held, and frames of changing sizes grow the node's memory without bound
(test/ros/test_fuzz.py measures that end to end).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pspnet_ros.ros import middleware

NS = {"d": "http://www.eprosima.com"}


def _default(root: ET.Element, tag: str) -> ET.Element:
    found = [e for e in root.iter(f"{{{NS['d']}}}{tag}") if e.get("is_default_profile") == "true"]
    assert len(found) == 1, tag
    return found[0]


def test_profile_bounds_reader_and_writer_memory():
    root = ET.fromstring(middleware.PROFILE)
    # DYNAMIC: one buffer per sample, freed when the sample is taken (reader) or leaves the
    # history (writer), so an endpoint holds only the samples in flight, not a pool of buffers
    # each grown to the largest frame it ever carried. Readers: the camera input. Writers: the
    # outputs, which have the size of each frame the node answers.
    for tag in ("data_reader", "data_writer"):
        assert _default(root, tag).find("d:historyMemoryPolicy", NS).text == "DYNAMIC", tag
    assert _default(root, "data_writer").find("d:qos/d:publishMode/d:kind", NS).text == "SYNCHRONOUS"


def test_profile_restates_what_rmw_sets_without_xml_qos():
    """With RMW_FASTRTPS_USE_QOS_FROM_XML=1 rmw_fastrtps sets nothing itself, services included.

    What it sets otherwise (rmw_fastrtps_cpp, Humble to Rolling) must be in the profile: data
    sharing off on every reader and writer (left at AUTO, Jazzy's lifecycle change_state replies
    failed after a few transitions) and the built-in discovery histories growable.
    """
    root = ET.fromstring(middleware.PROFILE)
    for tag in ("data_reader", "data_writer"):
        assert _default(root, tag).find("d:qos/d:data_sharing/d:kind", NS).text == "OFF", tag
    builtin = _default(root, "participant").find("d:rtps/d:builtin", NS)
    assert builtin.find("d:readerHistoryMemoryPolicy", NS).text == "PREALLOCATED_WITH_REALLOC"
    assert builtin.find("d:writerHistoryMemoryPolicy", NS).text == "PREALLOCATED_WITH_REALLOC"


def test_publication_mode_follows_rmw_fastrtps_variable(tmp_path):
    for value, kind in (("", "SYNCHRONOUS"), ("ASYNCHRONOUS", "ASYNCHRONOUS"), ("SYNCHRONOUS", "SYNCHRONOUS"),
                        ("nonsense", "SYNCHRONOUS"), ("AUTO", None)):
        env = {"ROS_DISTRO": "kilted", **({"RMW_FASTRTPS_PUBLICATION_MODE": value} if value else {})}
        middleware.configure_fastdds(env, directory=tmp_path)
        root = ET.fromstring(Path(env["FASTDDS_DEFAULT_PROFILES_FILE"]).read_text())
        found = _default(root, "data_writer").find("d:qos/d:publishMode/d:kind", NS)
        assert (found.text if found is not None else None) == kind, value
    with pytest.raises(ValueError, match="publication mode"):
        middleware.profile_xml("FAST")


def test_configure_sets_the_profile_before_init(tmp_path):
    env = {"ROS_DISTRO": "kilted"}
    settings = middleware.configure_fastdds(env, directory=tmp_path)
    # Fast DDS applies a memory policy from XML only when rmw_fastrtps is told to use XML QoS.
    assert env["RMW_FASTRTPS_USE_QOS_FROM_XML"] == "1"
    path = Path(env["FASTDDS_DEFAULT_PROFILES_FILE"])
    assert path.parent == tmp_path and path.read_text() == middleware.PROFILE
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


def test_every_distro_gets_the_profile_under_both_variable_names(tmp_path):
    """Fast DDS 2.x (Humble, Jazzy) reads FASTRTPS_DEFAULT_PROFILES_FILE, Fast DDS 3 (Kilted) FASTDDS_.

    Setting only the Fast DDS 3 name left Jazzy in XML-QoS mode with no XML at all (Fast DDS' bare
    defaults): its lifecycle change_state replies failed on the third cleanup.
    """
    for distro in ("humble", "jazzy", "kilted", ""):
        env = {"ROS_DISTRO": distro} if distro else {}
        settings = middleware.configure_fastdds(env, directory=tmp_path)
        assert settings["RMW_FASTRTPS_USE_QOS_FROM_XML"] == "1"
        assert settings["FASTRTPS_DEFAULT_PROFILES_FILE"] == settings["FASTDDS_DEFAULT_PROFILES_FILE"]
        assert Path(settings["FASTRTPS_DEFAULT_PROFILES_FILE"]).read_text() == middleware.PROFILE
