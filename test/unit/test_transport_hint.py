"""Which Fast DDS setups lose large best-effort frames, and the setting the node names for them."""

from __future__ import annotations

import pytest

from pspnet_ros.ros.transport_hint import LARGE_FRAMES_SETTING, large_best_effort_hint

JAZZY, KILTED = (2, 14, 5), (3, 2, 2)


@pytest.mark.parametrize("version", [JAZZY, KILTED], ids=["fastdds2.14", "fastdds3"])
def test_default_transports_get_the_setting_named(version):
    hint = large_best_effort_hint("rmw_fastrtps_cpp", {}, version)
    assert LARGE_FRAMES_SETTING in hint and "FASTDDS_BUILTIN_TRANSPORTS unset" in hint


def test_plain_large_data_is_enough_on_fast_dds_3_only():
    env = {"FASTDDS_BUILTIN_TRANSPORTS": "LARGE_DATA"}
    assert large_best_effort_hint("rmw_fastrtps_cpp", env, KILTED) == ""
    hint = large_best_effort_hint("rmw_fastrtps_cpp", env, JAZZY)
    assert LARGE_FRAMES_SETTING in hint and "Fast DDS 2.14.5" in hint


@pytest.mark.parametrize("version", [JAZZY, KILTED, None])
def test_the_named_setting_silences_it(version):
    name, value = LARGE_FRAMES_SETTING.split("=", 1)
    assert large_best_effort_hint("rmw_fastrtps_cpp", {name: value}, version) == ""


def test_other_middlewares_and_xml_profiles_are_not_judged():
    assert large_best_effort_hint("rmw_cyclonedds_cpp", {}, JAZZY) == ""
    assert large_best_effort_hint("rmw_fastrtps_cpp", {"FASTRTPS_DEFAULT_PROFILES_FILE": "/x.xml"}, JAZZY) == ""


def test_the_nodes_own_profile_is_not_a_user_configuration():
    """middleware.py points Fast DDS at the node's reader-memory profile: still judged."""
    env = {"FASTDDS_DEFAULT_PROFILES_FILE": "/tmp/pspnet_ros_fastdds_0.xml", "RMW_FASTRTPS_USE_QOS_FROM_XML": "1"}
    assert LARGE_FRAMES_SETTING in large_best_effort_hint("rmw_fastrtps_cpp", env, JAZZY)
