"""Fixtures shared by the test/ros modules that run one node per module.

A module defines ``domain`` and ``node`` (its NodeProcess, started with its parameters); these
give it a client on the node's domain and a reliable camera on ``/image`` + ``/camera_info``.
A module with other needs defines its own ``client``, which takes precedence.
"""

from __future__ import annotations

import pytest
from sensor_msgs.msg import CameraInfo, Image

from ros_harness import RosClient, reliable_qos


@pytest.fixture(scope="module")
def client(domain, node):
    c = RosClient(domain)
    yield c
    c.close()


@pytest.fixture(scope="module")
def camera(client):
    """Reliable publishers of image and camera_info, like most camera drivers."""
    image_pub = client.node.create_publisher(Image, "/image", reliable_qos(10))
    info_pub = client.node.create_publisher(CameraInfo, "/camera_info", reliable_qos(10))
    client.wait_until(lambda: image_pub.get_subscription_count() > 0, 60, "the node to subscribe /image")
    return image_pub, info_pub
