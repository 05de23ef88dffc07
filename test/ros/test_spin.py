"""The node's spin loop survives a service response the middleware refuses (pspnet_ros/ros/process.py).

Seen once in CI on Jazzy (Fast DDS 2.14): during 30 lifecycle transitions rclpy's send_response
raised "failed to send response: cannot publish data" out of the executor and the node stopped.
Driven here with a stand-in executor; anything else raised still leaves spin unchanged.
"""

from __future__ import annotations

import pytest

import rclpy  # noqa: F401  (the ROS layer must run: a missing rclpy is an error, not a skip)

from pspnet_ros.ros import process


class RCLError(RuntimeError):
    pass


class _Context:
    def __init__(self, turns):
        self.turns = turns

    def ok(self):
        self.turns -= 1
        return self.turns >= 0


class _Executor:
    def __init__(self, effects):
        self.effects, self.context, self.nodes, self.calls = list(effects), _Context(len(effects)), [], 0

    def add_node(self, node):
        self.nodes.append(node)

    def remove_node(self, node):
        self.nodes.remove(node)

    def spin_once(self):
        self.calls += 1
        effect = self.effects.pop(0)
        if effect is not None:
            raise effect


def test_a_refused_response_is_logged_and_spinning_goes_on():
    refused = RCLError("failed to send response: cannot publish data, at /project/src/rmw_response.cpp:165")
    ex = _Executor([None, refused, None, refused, None])
    assert process.spin("node", ex) == 2
    assert ex.calls == 5 and ex.nodes == []


def test_any_other_error_still_leaves_spin():
    ex = _Executor([None, RCLError("Failed to publish: cannot publish data"), None])
    with pytest.raises(RCLError):
        process.spin("node", ex)
    assert ex.calls == 2 and ex.nodes == []
