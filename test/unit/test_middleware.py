"""The node's Fast DDS profile (issue 24): output writers free each sample's buffer.

Without it, rmw_fastrtps' PREALLOCATED_WITH_REALLOC writers keep every payload buffer at the
largest size it ever held, and outputs of changing sizes grow the node's memory in steps
(benchmarks/fuzz.py measures that end to end). The profile also restates what rmw_fastrtps sets
itself when XML QoS is off, and reaches Fast DDS 2.x and 3 under their own variable names.
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


def test_profile_bounds_reader_and_writer_memory_by_default():
    root = ET.fromstring(middleware.PROFILE)
    # Writers (the outputs, each frame at its own size) and readers (the camera input): DYNAMIC,
    # one buffer per sample, freed when it leaves the history, not a pool of buffers each grown
    # to the largest frame.
    writer = _default(root, "data_writer")
    assert writer.find("d:historyMemoryPolicy", NS).text == "DYNAMIC"
    assert writer.find("d:qos/d:publishMode/d:kind", NS).text == "SYNCHRONOUS"
    reader = _default(root, "data_reader")
    assert reader.find("d:historyMemoryPolicy", NS).text == "DYNAMIC"


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


def test_each_fast_dds_version_gets_the_profile_under_its_own_variable(tmp_path):
    """Fast DDS 2.x (Humble, Jazzy) reads FASTRTPS_DEFAULT_PROFILES_FILE, Fast DDS 3 (Kilted) FASTDDS_.

    Setting only the Fast DDS 3 name left Jazzy in XML-QoS mode with no XML at all (Fast DDS' bare
    defaults): its lifecycle change_state replies failed on the third cleanup. Kilted's rmw warns
    that the Fast DDS 2 name is deprecated, so each version gets only its own.
    """
    for distro, var in (("humble", "FASTRTPS"), ("jazzy", "FASTRTPS"), ("kilted", "FASTDDS"), ("rolling", "FASTDDS")):
        env = {"ROS_DISTRO": distro}
        settings = middleware.configure_fastdds(env, directory=tmp_path)
        assert set(settings) == {f"{var}_DEFAULT_PROFILES_FILE", "RMW_FASTRTPS_USE_QOS_FROM_XML"}, distro
        assert settings["RMW_FASTRTPS_USE_QOS_FROM_XML"] == "1"
        assert Path(settings[f"{var}_DEFAULT_PROFILES_FILE"]).read_text() == middleware.profile_xml(reader="dynamic")


def test_reader_memory_is_the_users_choice(tmp_path):
    """PSPNET_ROS_READER_MEMORY: dynamic (the default on every distro, bounded memory) or realloc (rmw's policy)."""
    for distro in ("humble", "jazzy", "kilted", "rolling"):
        assert middleware.READER_POLICIES[middleware.reader_memory({"ROS_DISTRO": distro})] == "DYNAMIC", distro
    for value, policy in (("", "DYNAMIC"), ("realloc", "PREALLOCATED_WITH_REALLOC"),
                          ("dynamic", "DYNAMIC"), (" Dynamic ", "DYNAMIC")):
        env = {"ROS_DISTRO": "kilted", **({middleware.READER_MEMORY_VAR: value} if value else {})}
        middleware.configure_fastdds(env, directory=tmp_path)
        root = ET.fromstring(Path(env["FASTDDS_DEFAULT_PROFILES_FILE"]).read_text())
        assert _default(root, "data_reader").find("d:historyMemoryPolicy", NS).text == policy, value
        # writers free each output's buffer whatever the readers do
        assert _default(root, "data_writer").find("d:historyMemoryPolicy", NS).text == "DYNAMIC"
    with pytest.raises(ValueError, match="PSPNET_ROS_READER_MEMORY='dynamc' is not one of dynamic, realloc"):
        middleware.configure_fastdds({"ROS_DISTRO": "kilted", middleware.READER_MEMORY_VAR: "dynamc"},
                                     directory=tmp_path)


def test_dynamic_readers_only_where_the_nodes_profile_makes_them(tmp_path):
    """qos.input_depth keeps depth 2 only for readers this profile made DYNAMIC."""
    for distro in ("jazzy", "kilted"):
        env = {"ROS_DISTRO": distro}
        middleware.configure_fastdds(env, directory=tmp_path)
        assert middleware.dynamic_readers(env), distro
        for choice, dynamic in (("realloc", False), ("dynamic", True)):
            env = {"ROS_DISTRO": distro, middleware.READER_MEMORY_VAR: choice}
            middleware.configure_fastdds(env, directory=tmp_path)
            assert middleware.dynamic_readers(env) == dynamic, (distro, choice)
    assert not middleware.dynamic_readers({"ROS_DISTRO": "kilted"})  # not configured: rmw's readers
    for env in ({"FASTDDS_DEFAULT_PROFILES_FILE": "/etc/mine.xml", "RMW_FASTRTPS_USE_QOS_FROM_XML": "1"},
                {"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"}):
        middleware.configure_fastdds(env, directory=tmp_path)
        assert not middleware.dynamic_readers(env), env
