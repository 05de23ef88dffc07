"""The grid is in ``bev.frame_id``: a camera mounted off base_footprint's origin is placed there.

Issue 22 (3e): with only ``bev.camera_height/pitch/roll`` the grid's origin was the road point
under the camera while its frame_id said ``base_footprint``, so in RViz or Nav2 the grid was
shifted by the camera's mounting offset. These checks run the node's own parameter path
(``params_from_values`` -> ``bev_setup``) and its ``BevOutput``: a road point at x = 10 m in
base_footprint, seen by a camera mounted 1.2 m ahead of base_footprint, must land in the cell
of x = 10 m. The TF path (``tf_camera_pose``) needs tf2_ros, which this setup lacks; the
choice between TF and the parameters is checked with a stand-in lookup.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

import rclpy  # noqa: F401  (the ROS layer must run: a missing rclpy is an error, not a skip)

from pspnet_ros import bev  # noqa: E402
from sensor_msgs.msg import CameraInfo  # noqa: E402
from std_msgs.msg import Header  # noqa: E402
from pspnet_ros.ros import params as P  # noqa: E402
from pspnet_ros.ros.bev_output import BevOutput  # noqa: E402

F, CX, CY, W, H = 500.0, 320.0, 240.0, 640, 480
K = [F, 0.0, CX, 0.0, F, CY, 0.0, 0.0, 1.0]
HEIGHT, MOUNT_X = 1.5, 1.2
ROAD, OTHER = 0, 1


def labels_with_road_at(depth: float) -> np.ndarray:
    """(H, W) labels: OTHER everywhere but a 5x21 px ROAD patch where a level camera sees the road ``depth`` m ahead."""
    labels = np.full((H, W), OTHER, np.uint8)
    v, u = int(round(CY + F * HEIGHT / depth)), int(CX)
    labels[v - 2:v + 3, u - 10:u + 11] = ROAD
    return labels


def free_cell_centroid(occupancy: np.ndarray, grid: bev.GridSpec) -> tuple:
    rows, cols = np.nonzero(occupancy == bev.FREE)
    assert rows.size, "no drivable cell in the grid"
    xs, ys = grid.cell_centers()
    return float(xs[cols].mean()), float(ys[rows].mean())


def test_a_camera_mounted_ahead_of_base_footprint_puts_road_points_at_their_base_footprint_x():
    p = P.params_from_values({"bev.enable": True, "bev.camera_height": HEIGHT, "bev.camera_x": MOUNT_X,
                              "bev.resolution": 0.1, "bev.forward_range": [4.0, 30.0],
                              "bev.lateral_range": [-5.0, 5.0]})
    grid, transform = P.bev_setup(p)
    assert grid.frame_id == "base_footprint"
    # The road point x = 10 m in base_footprint is 8.8 m ahead of the camera.
    occupancy = bev.projector(K, (H, W), transform, grid).occupancy_from_labels(
        labels_with_road_at(10.0 - MOUNT_X), [ROAD])
    x, y = free_cell_centroid(occupancy, grid)
    assert x == pytest.approx(10.0, abs=0.15) and y == pytest.approx(0.0, abs=0.15)
    # The camera's yaw and lateral offset count too: turned 90 degrees left, 0.5 m left of
    # base_footprint, the same pixel is 8.8 m to the left of the camera.
    p = P.params_from_values({"bev.enable": True, "bev.camera_height": HEIGHT, "bev.camera_x": MOUNT_X,
                              "bev.camera_y": 0.5, "bev.camera_yaw": np.pi / 2, "bev.resolution": 0.1,
                              "bev.forward_range": [-5.0, 5.0], "bev.lateral_range": [4.0, 14.0]})
    grid, transform = P.bev_setup(p)
    occupancy = bev.projector(K, (H, W), transform, grid).occupancy_from_labels(labels_with_road_at(8.8), [ROAD])
    x, y = free_cell_centroid(occupancy, grid)
    assert x == pytest.approx(MOUNT_X, abs=0.15) and y == pytest.approx(0.5 + 8.8, abs=0.15)


class _Publisher:
    def __init__(self) -> None:
        self.sent = []

    def publish(self, msg) -> None:
        self.sent.append(msg)

    def get_subscription_count(self) -> int:
        return 1


def test_the_grid_takes_the_camera_pose_from_tf_when_tf_has_it_else_from_the_parameters():
    node = SimpleNamespace(create_publisher=lambda *a, **k: _Publisher())
    grid = bev.GridSpec(0.1, (4.0, 30.0), (-5.0, 5.0), "base_footprint")
    from_params = bev.camera_to_ground_from_pose(HEIGHT)  # the parameters: camera above the origin
    from_tf = bev.camera_to_ground_from_pose(HEIGHT, x=MOUNT_X)  # TF: 1.2 m ahead of it
    tf_has = {}
    logs = []
    released = []
    out = BevOutput(node, "", grid, from_params, [ROAD], False, None,
                    tf=(lambda frame: tf_has.get(frame), lambda: released.append(True)),
                    log=lambda level, text: logs.append((level, text)))
    info = CameraInfo(width=W, height=H, k=K, p=[F, 0.0, CX, 0.0, 0.0, F, CY, 0.0, 0.0, 0.0, 1.0, 0.0])
    header = Header(frame_id="camera_optical")
    header.stamp.sec = 1
    labels = labels_with_road_at(10.0 - MOUNT_X)

    out.publish(header, info, (H, W), labels)  # TF has nothing yet: the parameters' pose
    x, _ = free_cell_centroid(np.asarray(out.grid_publisher.sent[-1].data, np.int8).reshape(grid.shape), grid)
    assert x == pytest.approx(10.0 - MOUNT_X, abs=0.15)
    assert [lv for lv, _ in logs] == ["warning"] and "camera_optical" in logs[0][1]

    tf_has["camera_optical"] = from_tf
    out.publish(header, info, (H, W), labels)
    out.publish(header, info, (H, W), labels)
    x, _ = free_cell_centroid(np.asarray(out.grid_publisher.sent[-1].data, np.int8).reshape(grid.shape), grid)
    assert x == pytest.approx(10.0, abs=0.15)
    assert [lv for lv, _ in logs] == ["warning", "info"]  # once per change of source, not per frame
    assert out.grid_publisher.sent[-1].header.frame_id == "base_footprint"
    out.release()
    assert released == [True]
