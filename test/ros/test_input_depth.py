"""The camera subscriptions' depth follows the input readers' memory (issue 24).

The node's DYNAMIC Fast DDS readers (the default, pspnet_ros/ros/middleware.py) at depth 1 fell
far behind a reliable camera faster than the node; depth 2 keeps them answering (measurements in
pspnet_ros/ros/qos.py and the README, "Reliability: malformed input"). rmw's reader policy
(``PSPNET_ROS_READER_MEMORY=realloc``), a user's own Fast DDS profile and other RMWs keep depth 1.
"""

from __future__ import annotations

import os

from rclpy.qos import HistoryPolicy, ReliabilityPolicy

from pspnet_ros.ros import middleware, qos


def test_depth_two_with_the_nodes_dynamic_readers_else_one(monkeypatch, tmp_path):
    for distro in ("jazzy", "kilted"):  # Fast DDS 2.x and 3 alike
        env = {"ROS_DISTRO": distro}
        middleware.configure_fastdds(env, directory=tmp_path)
        assert qos.input_depth(env) == 2, distro
        for choice in ("realloc", " Realloc "):
            env = {"ROS_DISTRO": distro, "PSPNET_ROS_READER_MEMORY": choice}
            middleware.configure_fastdds(env, directory=tmp_path)
            assert qos.input_depth(env) == 1, (distro, choice)
    assert qos.input_depth({"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"}) == 1
    assert qos.input_depth({"FASTDDS_DEFAULT_PROFILES_FILE": "/etc/mine.xml",
                            "RMW_FASTRTPS_USE_QOS_FROM_XML": "1"}) == 1
    # input_qos reads the process environment, as the node does after configure_fastdds. The
    # settings go in through monkeypatch so that they leave with the test: a profile left in
    # os.environ would configure every process the rest of the session starts.
    env = {k: v for k, v in os.environ.items()
           if k not in middleware.USER_SETTINGS + (middleware.READER_MEMORY_VAR, "RMW_IMPLEMENTATION")}
    env["ROS_DISTRO"] = "kilted"
    middleware.configure_fastdds(env, directory=tmp_path)
    for name in middleware.USER_SETTINGS + (middleware.READER_MEMORY_VAR, "RMW_IMPLEMENTATION", "ROS_DISTRO"):
        if name in env:
            monkeypatch.setenv(name, env[name])
        else:
            monkeypatch.delenv(name, raising=False)
    profile = qos.input_qos(ReliabilityPolicy.RELIABLE)
    assert (profile.history, profile.depth, profile.reliability) == (
        HistoryPolicy.KEEP_LAST, 2, ReliabilityPolicy.RELIABLE)
    monkeypatch.setenv("RMW_FASTRTPS_USE_QOS_FROM_XML", "0")
    assert qos.input_qos(ReliabilityPolicy.BEST_EFFORT).depth == 1
