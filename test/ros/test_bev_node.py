"""segmentation/drivable_grid: a real node process over real DDS publishes the ground-plane grid.

The node runs the tiny random checkpoint with ``bev.enable`` and a 4x4 ``bev.camera_to_ground``
(a camera 1.65 m above the road, pitched down 0.02 rad) at ``output_resolution: network``, so the
grid is projected from labels at the inference size with camera_info's K scaled to that size.
The test projects the labels it receives with the library and expects the same cells.
"""

from __future__ import annotations

import numpy as np
import pytest

import rclpy  # noqa: F401  (the ROS layer must run: a missing rclpy is an error, not a skip)

from nav_msgs.msg import OccupancyGrid  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from pspnet_ros import bev  # noqa: E402
from ros_harness import (NodeProcess, as_array, domain_id_for, image_msg,  # noqa: E402
                         kitti_camera_info, reliable_qos, stamp_ns, warm_up)

T0 = 1_700_000_000_000_000_000
CAMERA_TO_GROUND = bev.camera_to_ground_from_pose(1.65, pitch=0.02)
GRID = bev.GridSpec(0.1, (4.0, 40.0), (-8.0, 8.0), "ground_test")  # 360 x 160 cells


@pytest.fixture(scope="module")
def domain():
    return domain_id_for(__name__)


@pytest.fixture(scope="module")
def node(tmp_path_factory, domain, tiny_checkpoint):
    tmp = tmp_path_factory.mktemp("bev_node")
    proc = NodeProcess(tmp, domain, {
        "checkpoint": str(tiny_checkpoint), "device": "cpu", "output_resolution": "network",
        "bev": {"enable": True, "camera_to_ground": CAMERA_TO_GROUND.ravel().tolist(),
                "frame_id": GRID.frame_id, "resolution": GRID.resolution,
                "forward_range": list(GRID.x_range), "lateral_range": list(GRID.y_range)},
    })
    proc.wait_for_output("serving 1 camera", timeout=120)
    yield proc
    proc.stop()


def with_stamp(stamp):
    return lambda m: stamp_ns(m.header) == stamp


def test_without_camera_info_the_grid_is_not_guessed(client, camera, kitti_frames, node):
    image_pub, _ = camera
    labels, _ = client.collect(Image, "/segmentation/labels", reliable_qos(50))
    grids, _ = client.collect(OccupancyGrid, "/segmentation/drivable_grid", reliable_qos(50))
    frame = kitti_frames[0][1]
    warm_up(lambda s: image_pub.publish(image_msg(frame, s, "camera")), [labels])
    node.wait_for_output("drivable_grid not published: no camera_info", timeout=30)
    assert grids.messages == []  # labels come, the grid does not


def test_grid_has_the_input_stamp_the_grid_frame_and_the_projected_labels(client, camera, kitti_frames):
    image_pub, info_pub = camera
    grids, _ = client.collect(OccupancyGrid, "/segmentation/drivable_grid", reliable_qos(50))
    pictures, _ = client.collect(Image, "/segmentation/drivable_bev", reliable_qos(50))
    labels, _ = client.collect(Image, "/segmentation/labels", reliable_qos(50))
    stem, frame = kitti_frames[1]
    h, w = frame.shape[:2]

    def send(stamp):
        info_pub.publish(kitti_camera_info(stamp, "camera", h, w))
        image_pub.publish(image_msg(frame, stamp, f"kitti_{stem}"))

    warm_up(send, [grids, pictures, labels])
    stamp = T0 + 123_456_789
    send(stamp)
    grid = grids.wait_for(with_stamp(stamp), 60, "the drivable grid")
    lab = as_array(labels.wait_for(with_stamp(stamp), 60, "the labels"))
    picture = pictures.wait_for(with_stamp(stamp), 60, "the BEV picture")

    # Metadata: the grid frame (not the camera's), the input stamp, origin at (x_min, y_min).
    assert grid.header.frame_id == "ground_test" and stamp_ns(grid.header) == stamp
    info = grid.info
    assert info.resolution == pytest.approx(0.1) and (info.width, info.height) == (360, 160)
    assert (info.origin.position.x, info.origin.position.y, info.origin.position.z) == (4.0, -8.0, 0.0)
    assert (info.origin.orientation.x, info.origin.orientation.y, info.origin.orientation.z,
            info.origin.orientation.w) == (0.0, 0.0, 0.0, 1.0)
    data = np.array(grid.data, np.int8).reshape(info.height, info.width)
    assert set(np.unique(data)) <= {bev.UNKNOWN, bev.FREE, bev.OCCUPIED}

    # The labels are at the inference size (network): camera_info's K scaled to it.
    assert lab.shape == (96, 320)
    k = np.array(kitti_camera_info(0, "", h, w).k).reshape(3, 3)
    k[0] *= 320 / w
    k[1] *= 96 / h
    expected = bev.GroundProjector(k, lab.shape, CAMERA_TO_GROUND, GRID).occupancy_from_labels(lab, [1])
    np.testing.assert_array_equal(data, expected)
    assert (data == bev.UNKNOWN).mean() < 0.5 and (data != bev.UNKNOWN).any()

    assert picture.header.frame_id == "ground_test" and picture.encoding == "mono8"
    np.testing.assert_array_equal(as_array(picture), bev.occupancy_to_image(data))


def test_a_4_3_camera_runs_at_its_own_aspect_and_the_grid_follows(client, camera, node):
    """A 640x480 camera runs at its own aspect with inference_size auto (the default).

    144x208 is the tiny model's 30,720 pixels at 4:3: labels at that size, camera_info scaled to
    it, the grid projected with that K; /diagnostics names the size.
    """
    from diagnostic_msgs.msg import DiagnosticArray

    image_pub, info_pub = camera
    grids, _ = client.collect(OccupancyGrid, "/segmentation/drivable_grid", reliable_qos(50))
    labels, _ = client.collect(Image, "/segmentation/labels", reliable_qos(50))
    diags, _ = client.collect(DiagnosticArray, "/diagnostics", reliable_qos(50))
    h, w = 480, 640
    frame = np.random.default_rng(3).integers(0, 256, (h, w, 3), dtype=np.uint8)

    def send(stamp):
        info_pub.publish(kitti_camera_info(stamp, "camera", h, w))
        image_pub.publish(image_msg(frame, stamp, "cam43"))

    warm_up(send, [grids, labels])
    stamp = T0 + 987_654_321
    send(stamp)
    grid = grids.wait_for(with_stamp(stamp), 60, "the drivable grid")
    lab = as_array(labels.wait_for(with_stamp(stamp), 60, "the labels"))
    assert lab.shape == (144, 208)
    k = np.array(kitti_camera_info(0, "", h, w).k).reshape(3, 3)
    k[0] *= 208 / w
    k[1] *= 144 / h
    data = np.array(grid.data, np.int8).reshape(grid.info.height, grid.info.width)
    expected = bev.GroundProjector(k, lab.shape, CAMERA_TO_GROUND, GRID).occupancy_from_labels(lab, [1])
    np.testing.assert_array_equal(data, expected)
    msg = diags.wait_for(lambda m: any("144x208" in kv.value for s in m.status for kv in s.values
                                       if kv.key == "inference size"), 60, "diagnostics naming 144x208")
    size = next(kv.value for s in msg.status for kv in s.values if kv.key == "inference size")
    assert size.startswith("auto (") and "96x320" in size
