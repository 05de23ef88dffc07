"""Bird's-eye view: projection against closed-form pinhole geometry, grid layout, KITTI calib, metric."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pspnet_ros import bev

F, CX, CY, W, H = 700.0, 320.0, 240.0, 640, 480
K = np.array([[F, 0, CX], [0, F, CY], [0, 0, 1.0]])
HEIGHT = 1.65


def flat_projector(pitch=0.0, roll=0.0, grid=None, height=HEIGHT):
    return bev.GroundProjector(K, (H, W), bev.camera_to_ground_from_pose(height, pitch, roll),
                               grid or bev.GridSpec())


def test_a_point_10m_ahead_lands_on_the_closed_form_row():
    # Level pinhole camera 1.65 m above a flat road: a road point d ahead and y to the left is
    # seen at v = cy + f h / d, u = cx - f y / d.
    pj = flat_projector()
    uv, ok = pj.ground_to_pixel(np.array([[10.0, 0.0, 0.0], [10.0, 2.0, 0.0], [20.0, -3.0, 0.0]]))
    assert ok.all()
    np.testing.assert_allclose(uv[0], [CX, CY + F * HEIGHT / 10.0], atol=1e-9)
    np.testing.assert_allclose(uv[1], [CX - F * 2.0 / 10.0, CY + F * HEIGHT / 10.0], atol=1e-9)
    np.testing.assert_allclose(uv[2], [CX + F * 3.0 / 20.0, CY + F * HEIGHT / 20.0], atol=1e-9)


def test_the_pose_places_the_camera_in_the_grid_frame():
    # Camera 1.2 m ahead of and 0.3 m left of base_footprint, turned 90 degrees to the left:
    # the road point 5 m to its left (x = 1.2, y = 5.3 in base_footprint) is straight ahead
    # of it, 5 m away.
    t = bev.camera_to_ground_from_pose(HEIGHT, x=1.2, y=0.3, yaw=math.pi / 2)
    pj = bev.GroundProjector(K, (H, W), t, bev.GridSpec())
    uv, ok = pj.ground_to_pixel(np.array([[1.2, 5.3, 0.0], [2.2, 5.3, 0.0]]))
    assert ok.all()
    np.testing.assert_allclose(uv[0], [CX, CY + F * HEIGHT / 5.0], atol=1e-9)
    np.testing.assert_allclose(uv[1], [CX + F * 1.0 / 5.0, CY + F * HEIGHT / 5.0], atol=1e-9)  # 1 m to its right
    assert bev.camera_height(t) == pytest.approx(HEIGHT)


def test_rigid_from_quaternion_matches_the_pose():
    yaw, pitch = 0.4, 0.1
    t = bev.camera_to_ground_from_pose(1.4, pitch, x=0.5, y=-0.2, yaw=yaw)
    # the same pose as TF would hold it: q = q_yaw * q_pitch * q_optical
    r = t[:3, :3]
    w = math.sqrt(max(0.0, 1 + r[0, 0] + r[1, 1] + r[2, 2])) / 2
    q = ((r[2, 1] - r[1, 2]) / (4 * w), (r[0, 2] - r[2, 0]) / (4 * w), (r[1, 0] - r[0, 1]) / (4 * w), w)
    np.testing.assert_allclose(bev.rigid_from_quaternion((0.5, -0.2, 1.4), q), t, atol=1e-12)
    np.testing.assert_allclose(bev.rigid_from_quaternion((0, 0, 0), (0, 0, 1, 1))[:3, :3],
                               [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-12)  # normalized: yaw 90 deg
    with pytest.raises(bev.BevError):
        bev.rigid_from_quaternion((0, 0, 0), (0, 0, 0, 0))


def test_pitch_down_moves_the_point_up_the_image_by_the_angle():
    pitch = math.radians(3.0)  # positive = looking down at the road
    uv, ok = flat_projector(pitch).ground_to_pixel(np.array([[10.0, 0.0, 0.0]]))
    assert ok.all()
    np.testing.assert_allclose(uv[0], [CX, CY + F * math.tan(math.atan(HEIGHT / 10.0) - pitch)], atol=1e-9)


def test_roll_lowers_the_right_side():
    # Positive roll (REP-103, about x forward) tilts the camera's right side down: the horizon
    # in the image rises to the right... i.e. points on the right of the road appear higher.
    uv, _ = flat_projector(roll=math.radians(5.0)).ground_to_pixel(np.array([[10.0, 3.0, 0.0], [10.0, -3.0, 0.0]]))
    left, right = uv
    assert right[1] < left[1]


def test_points_behind_the_camera_are_not_projected():
    uv, ok = flat_projector().ground_to_pixel(np.array([[-5.0, 0.0, 0.0]]))
    assert not ok[0] and np.isnan(uv[0]).all()


@pytest.mark.parametrize("pitch,roll", [(0.0, 0.0), (0.05, -0.02), (-0.03, 0.04)])
def test_round_trip_image_ground_image(pitch, roll):
    pj = flat_projector(pitch, roll)
    rng = np.random.default_rng(0)
    pixels = np.stack([rng.uniform(0, W - 1, 200), rng.uniform(CY + 40, H - 1, 200)], axis=1)
    ground, hit = pj.pixel_to_ground(pixels)
    assert hit.all()
    np.testing.assert_allclose(ground[:, 2], 0.0, atol=1e-9)  # on the road
    assert (ground[:, 0] > 0).all()  # ahead
    back, ok = pj.ground_to_pixel(ground)
    assert ok.all()
    np.testing.assert_allclose(back, pixels, atol=1e-6)


def test_rays_above_the_horizon_miss_the_road():
    _, hit = flat_projector().pixel_to_ground(np.array([[CX, CY - 10.0], [CX, CY + 10.0]]))
    assert hit.tolist() == [False, True]


def test_grid_metadata_origin_resolution_and_cell_centres():
    g = bev.GridSpec()  # the KITTI devkit's BEV
    assert (g.resolution, g.width, g.height, g.shape) == (0.05, 800, 400, (400, 800))
    assert g.origin == (6.0, -10.0) and g.frame_id == "base_footprint"
    xs, ys = g.cell_centers()
    assert xs[0] == pytest.approx(6.025) and xs[-1] == pytest.approx(45.975)
    assert ys[0] == pytest.approx(-9.975) and ys[-1] == pytest.approx(9.975)
    # Row = y (left), column = x (forward): OccupancyGrid's row-major layout from info.origin.
    assert g.cell_of(6.01, -9.99) == (0, 0)
    assert g.cell_of(10.0, 0.0) == (200, 80)
    assert g.cell_of(45.99, 9.99) == (399, 799)
    meta = bev.grid_metadata(bev.GridSpec(0.1, (0.0, 20.0), (-5.0, 5.0), "odom"))
    assert meta == {"frame_id": "odom", "resolution": 0.1, "width": 200, "height": 100,
                    "origin": (0.0, -5.0, 0.0)}


def test_grid_orientation_left_is_up_the_rows_forward_along_the_columns():
    # Paint the image's left half as class 1: it must land at y > 0 (left, REP-103).
    labels = np.zeros((H, W), np.uint8)
    labels[:, : W // 2 - 5] = 1
    pj = flat_projector(grid=bev.GridSpec(0.1, (5.0, 25.0), (-4.0, 4.0)))
    occ = pj.occupancy_from_labels(labels, [1])
    g = pj.grid
    assert occ[g.cell_of(10.0, 2.0)] == bev.FREE and occ[g.cell_of(10.0, -2.0)] == bev.OCCUPIED
    # Nearer cells are lower in the image: the row of a cell 10 m ahead is the closed form's.
    labels = np.zeros((H, W), np.uint8)
    labels[int(round(CY + F * HEIGHT / 10.0)):, :] = 1  # everything up to 10 m ahead
    occ = pj.occupancy_from_labels(labels, [1])
    assert occ[g.cell_of(9.5, 0.0)] == bev.FREE and occ[g.cell_of(10.5, 0.0)] == bev.OCCUPIED


def test_occupancy_values_unknown_outside_the_image():
    pj = flat_projector()
    occ = pj.occupancy_from_labels(np.ones((H, W), np.uint8), drivable_ids=(1,))
    assert occ.dtype == np.int8 and set(np.unique(occ)) == {bev.UNKNOWN, bev.FREE}
    # 6 m ahead the camera (horizontal FOV +-24.6 deg) sees only |y| < 6 * 320 / 700 m.
    g = pj.grid
    assert occ[g.cell_of(6.1, 0.0)] == bev.FREE
    assert occ[g.cell_of(6.1, 9.0)] == bev.UNKNOWN and occ[g.cell_of(6.1, -9.0)] == bev.UNKNOWN
    np.testing.assert_array_equal(occ == bev.UNKNOWN, ~pj.valid)
    occ = pj.occupancy_from_labels(np.zeros((H, W), np.uint8), drivable_ids=(1,))
    assert set(np.unique(occ[pj.valid])) == {bev.OCCUPIED}


def test_probability_occupancy_is_a_cost_and_bilinear():
    pj = flat_projector()
    occ = pj.occupancy_from_probability(np.full((H, W), 0.25, np.float32))
    assert set(np.unique(occ[pj.valid])) == {75} and (occ[~pj.valid] == bev.UNKNOWN).all()
    ramp = np.tile(np.linspace(0, 1, W, dtype=np.float32), (H, 1))  # p = u / (W - 1)
    warped = pj.warp_probability(ramp)
    u, _ = pj.ground_to_pixel(np.array([[10.0, 1.234, 0.0]]))[0][0]
    r, c = pj.grid.cell_of(10.0, 1.234)
    xs, ys = pj.grid.cell_centers()
    uc = pj.ground_to_pixel(np.array([[xs[c], ys[r], 0.0]]))[0][0][0]
    assert warped[r, c] == pytest.approx(uc / (W - 1), abs=1e-3)  # interpolated, not rounded
    assert np.isnan(warped[~pj.valid]).all()


def test_occupancy_image_is_the_grid_seen_from_above():
    occ = np.array([[0, 100], [-1, 20]], np.int8)  # row 0 is y min (right)
    img = bev.occupancy_to_image(occ)
    np.testing.assert_array_equal(img, [[128, 255 - 51], [255, 0]])


def test_projector_is_cached_per_camera_and_transform():
    t = bev.camera_to_ground_from_pose(HEIGHT)
    a = bev.projector(K, (H, W), t, bev.GridSpec())
    assert bev.projector(K.copy(), (H, W), t.copy(), bev.GridSpec()) is a
    assert bev.projector(K * [[0.5], [0.5], [1]], (H // 2, W // 2), t, bev.GridSpec()) is not a


@pytest.mark.parametrize("kwargs,fragment", [
    ({"resolution": 0}, "resolution"), ({"x_range": (10.0, 5.0)}, "min < max"),
    ({"resolution": 0.0001}, "cells"), ({"frame_id": ""}, "frame_id")])
def test_bad_grids_are_refused_with_the_reason(kwargs, fragment):
    with pytest.raises(bev.BevError, match=fragment):
        bev.GridSpec(**kwargs)


def test_transform_checks():
    t = bev.camera_to_ground_from_pose(1.2, 0.1, 0.0)
    np.testing.assert_allclose(bev.check_rigid(t.ravel().tolist()), t)
    assert bev.camera_height(t) == pytest.approx(1.2)
    with pytest.raises(bev.BevError, match="16 numbers"):
        bev.check_rigid([1.0, 0.0])
    bad = t.copy()
    bad[:3, :3] *= 2
    with pytest.raises(bev.BevError, match="not a rotation"):
        bev.check_rigid(bad)
    with pytest.raises(bev.BevError, match="height"):
        bev.camera_to_ground_from_pose(-1.0)
    with pytest.raises(bev.BevError, match="K is not"):
        bev.GroundProjector(np.zeros(9), (H, W), t, bev.GridSpec())
    with pytest.raises(bev.BevError, match="built for 640x480"):
        bev.GroundProjector(K, (H, W), t, bev.GridSpec()).warp_labels(np.zeros((10, 10), np.uint8))


CALIB = """P0: 7.215377e+02 0 6.095593e+02 0 0 7.215377e+02 1.72854e+02 0 0 0 1 0
P2: 7.215377e+02 0.0 6.095593e+02 4.485728e+01 0.0 7.215377e+02 1.72854e+02 2.163791e-01 0 0 1 2.745884e-03
R0_rect: 9.999239e-01 9.83776e-03 -7.445048e-03 -9.869795e-03 9.999421e-01 -4.278459e-03 7.402527e-03 4.351614e-03 9.999631e-01
Tr_cam_to_road: 9.999570839814e-01 -5.508724949246e-03 -7.452906591504e-03 9.610489538319e-03 5.425697507328e-03 9.999234779341e-01 -1.111504746388e-02 -1.597134401910e+00 7.513565886504e-03 1.107413060494e-02 9.999104059534e-01 2.788606298060e-01
"""


def test_kitti_calib_projects_like_the_devkit(tmp_path):
    path = tmp_path / "um_000000.txt"
    path.write_text(CALIB)
    c = bev.read_kitti_calib(path)
    t = c.camera_to_ground()
    bev.check_rigid(t)
    assert 1.55 < bev.camera_height(t) < 1.65  # KITTI's camera is ~1.6 m above the road
    r0, tr = np.eye(4), np.eye(4)
    r0[:3, :3], tr[:3] = c.r0_rect, c.tr_cam_to_road
    pj = bev.GroundProjector(c.k, (375, 1242), t, bev.GridSpec())
    for x, y in [(10.0, 0.0), (25.0, -4.0), (40.0, 7.5)]:
        road = np.array([-y, 0.0, x, 1.0])  # devkit road frame: x right, y down, z forward
        p = c.p2 @ r0 @ np.linalg.inv(tr) @ road  # x = P2 R0_rect inv(Tr_cam_to_road) X
        ours, ok = pj.ground_to_pixel(np.array([[x, y, 0.0]]))
        assert ok[0]
        np.testing.assert_allclose(ours[0], p[:2] / p[2], atol=1e-3)


def test_kitti_calib_errors_name_the_file_and_key(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("P2: 1 2 3\n")
    with pytest.raises(bev.BevError, match="P2 has 3 values"):
        bev.read_kitti_calib(path)
    path.write_text(CALIB.replace("Tr_cam_to_road", "Tr_other"))
    with pytest.raises(bev.BevError, match="no Tr_cam_to_road"):
        bev.read_kitti_calib(path)
    with pytest.raises(bev.BevError, match="cannot read"):
        bev.read_kitti_calib(tmp_path / "missing.txt")


def test_kitti_calib_lookup(tmp_path):
    (tmp_path / "image_2").mkdir()
    (tmp_path / "calib").mkdir()
    img = tmp_path / "image_2" / "um_000001.jpg"
    assert bev.kitti_calib_for(img) is None
    (tmp_path / "calib" / "um_000001.txt").write_text(CALIB)
    assert bev.kitti_calib_for(img) == tmp_path / "calib" / "um_000001.txt"


def test_real_kitti_ground_truth_road_lands_ahead_of_the_car(data_root):
    from pspnet_ros.tools.data.datasets import KittiRoad

    ds = KittiRoad(data_root, "val")
    _, gt = ds.load(0)
    c = bev.read_kitti_calib(bev.kitti_calib_for(ds.pairs[0][0], ds.root / "calib"))
    pj = bev.GroundProjector(c.k, gt.shape, c.camera_to_ground(), bev.GridSpec())
    grid = pj.warp_labels(gt)
    g = pj.grid
    for x in (8.0, 15.0, 25.0):  # straight ahead, on the road the car drives on
        assert grid[g.cell_of(x, 0.0)] == 1, x
    assert 0.2 < (grid[pj.valid] == 1).mean() < 0.8


# ------------------------------------------------------------------------------- metric

def _synthetic_frame(road_from_row, predicted_from_row):
    """Build an image-space GT and prediction whose rows are distance bands.

    GT: road on rows >= ``road_from_row``; prediction: probability 1 on rows
    >= ``predicted_from_row``, 0 above. With the level camera, row v sees the road at
    d = f h / (v - cy): the rows are distance bands.
    """
    v = np.arange(H)[:, None] * np.ones((1, W), np.int64)
    return (torch.from_numpy((v >= predicted_from_row).astype(np.float32)),
            torch.from_numpy((v >= road_from_row).astype(np.int64)))


def test_bev_metric_known_answer():
    from pspnet_ros.tools.training.evaluate import KittiBevEval

    pj = flat_projector()
    road_row, pred_row = 298, 279  # ~20.1 m and ~29.6 m ahead
    prob, gt = _synthetic_frame(road_row, pred_row)
    ev = KittiBevEval([None])
    ev.update_with(pj, prob, gt)
    m = ev.compute()
    # Closed form on the grid: cell (x, y) is seen at u = cx - f y / x, v = cy + f h / x. Its GT is
    # the nearest pixel's (road iff v >= road_row - 0.5); its probability is bilinear, 1 iff
    # v >= pred_row. Every road cell is predicted (recall 1); the best threshold keeps exactly
    # the cells at probability 1, so precision = road cells / cells with v >= pred_row.
    xs, ys = pj.grid.cell_centers()
    gx, gy = np.meshgrid(xs, ys)
    u, v = CX - F * gy / gx, CY + F * HEIGHT / gx
    seen = (u >= 0) & (u <= W - 1) & (v <= H - 1)
    road = seen & (v >= road_row - 0.5)
    precision = road.sum() / (seen & (v >= pred_row)).sum()
    assert 0.3 < precision < 0.7  # the case is not degenerate
    assert m["recall"] == pytest.approx(1.0)
    assert m["precision"] == pytest.approx(precision, abs=1e-3)
    assert m["maxf"] == pytest.approx(2 * precision / (1 + precision), abs=1e-3)
    assert m["ap"] == pytest.approx(precision, abs=1e-3)  # one operating point: AP = its precision
    assert set(m) == {"maxf", "ap", "precision", "recall"}


def test_bev_metric_perfect_prediction_and_ignored_cells():
    from pspnet_ros.tools.training.evaluate import KittiBevEval

    pj = flat_projector()
    prob, gt = _synthetic_frame(298, 298)
    gt[:, W // 2:] = 255  # the right half of the image is outside the valid area
    prob[:, W // 2:] = 0.0  # wrong there, but ignored
    ev = KittiBevEval([None])
    ev.update_with(pj, prob, gt)
    m = ev.compute()
    assert m["maxf"] == pytest.approx(1.0) and m["ap"] == pytest.approx(1.0)


def test_frames_without_calib_are_skipped_and_named(tmp_path, capsys):
    from pspnet_ros.tools.training.evaluate import bev_evaluator

    class FakeDs:
        root = tmp_path
        pairs = [(tmp_path / "image_2" / "um_000001.jpg", None), (tmp_path / "image_2" / "um_000002.jpg", None)]

        def stem(self, i):
            return self.pairs[i][0].stem

    (tmp_path / "calib").mkdir()
    (tmp_path / "calib" / "um_000001.txt").write_text(CALIB)
    ev = bev_evaluator(FakeDs())
    assert ev.skipped == [1] and ev.expected == 1
    # Read from stderr: launch_testing's pytest plugin makes loggers not propagate (test_bags).
    err = capsys.readouterr().err
    assert "um_000002" in err and "skipped" in err and "um_000001" not in err
    ev.update(1, torch.zeros(375, 1242), torch.zeros(375, 1242, dtype=torch.int64))
    assert ev.frames == 0
