"""The camera subscriptions' depth follows the input readers' memory (issue 24).

DYNAMIC readers (``PSPNET_ROS_READER_MEMORY=dynamic``) at depth 1 fell far behind a reliable
camera faster than the node; depth 4 keeps them answering (measurements in pspnet_ros/ros/qos.py
and the README, "Reliability: malformed input"). rmw's reader policy keeps depth 1.
"""

from __future__ import annotations

from rclpy.qos import HistoryPolicy, ReliabilityPolicy

from pspnet_ros.ros import qos


def test_depth_one_by_default_four_with_dynamic_readers(monkeypatch):
    assert qos.input_depth({}) == 1
    assert qos.input_depth({"PSPNET_ROS_READER_MEMORY": "realloc"}) == 1
    assert qos.input_depth({"PSPNET_ROS_READER_MEMORY": " Dynamic "}) == 4
    monkeypatch.setenv("PSPNET_ROS_READER_MEMORY", "dynamic")
    profile = qos.input_qos(ReliabilityPolicy.RELIABLE)
    assert (profile.history, profile.depth, profile.reliability) == (
        HistoryPolicy.KEEP_LAST, 4, ReliabilityPolicy.RELIABLE)
    monkeypatch.delenv("PSPNET_ROS_READER_MEMORY")
    assert qos.input_qos(ReliabilityPolicy.BEST_EFFORT).depth == 1
