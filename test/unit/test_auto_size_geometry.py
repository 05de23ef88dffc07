"""At non-KITTI aspect-true sizes, camera_info scaling and the BEV projection stay exact.

A 640x480 and a 1280x720 camera run at 288x400 and 256x448 (``inference_size`` auto); the
sides are rounded to 16, so x and y scale slightly differently: everything must follow both.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from pspnet_ros import bev
from pspnet_ros.camera_info import scale_camera_info_fields
from pspnet_ros.inference.sizing import auto_inference_size


def info(h, w, fx, cx, cy):
    k = [fx, 0.0, cx, 0.0, fx, cy, 0.0, 0.0, 1.0]
    p = [fx, 0.0, cx, 0.0, 0.0, fx, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    roi = SimpleNamespace(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return SimpleNamespace(height=h, width=w, k=k, p=p, d=[0.0] * 5, r=[1, 0, 0, 0, 1, 0, 0, 0, 1],
                           distortion_model="plumb_bob", binning_x=0, binning_y=0, roi=roi)


@pytest.mark.parametrize("frame,fx", [((480, 640), 520.0), ((720, 1280), 900.0)])
def test_scaled_camera_info_and_bev_agree_at_the_auto_size(frame, fx):
    h, w = frame
    net = auto_inference_size(frame, (188, 621))
    assert net != (188, 621) and net[0] % 16 == 0 and net[1] % 16 == 0
    cam = info(h, w, fx, w / 2 - 3.5, h / 2 + 2.0)
    scaled = scale_camera_info_fields(cam, frame, net)
    assert (scaled.height, scaled.width) == net
    sx, sy = net[1] / w, net[0] / h
    k_full, k_net = np.asarray(cam.k).reshape(3, 3), scaled.k.reshape(3, 3)
    np.testing.assert_allclose(k_net[0], k_full[0] * sx)
    np.testing.assert_allclose(k_net[1], k_full[1] * sy)
    # The same ground points land on the same place of the picture at both sizes.
    c2g = bev.camera_to_ground_from_pose(1.6, pitch=0.05)
    grid = bev.GridSpec()
    full = bev.GroundProjector(k_full, frame, c2g, grid)
    small = bev.GroundProjector(k_net, net, c2g, grid)
    pts = np.array([[8.0, -2.0, 0.0], [15.0, 1.0, 0.0], [30.0, 3.0, 0.0]])
    uv_full, ok_full = full.ground_to_pixel(pts)
    uv_small, ok_small = small.ground_to_pixel(pts)
    assert ok_full.all() and ok_small.all()
    np.testing.assert_allclose(uv_small[:, 0], uv_full[:, 0] * sx, rtol=1e-9)
    np.testing.assert_allclose(uv_small[:, 1], uv_full[:, 1] * sy, rtol=1e-9)
    # A road mask (lower part of the picture) gives the same grid from network-size labels as
    # from full-size ones, but for cells on the road border (resampling).
    labels = np.zeros(frame, np.uint8)
    labels[int(h * 0.6):] = 1
    small_labels = labels[(np.arange(net[0]) * h // net[0])][:, (np.arange(net[1]) * w // net[1])]
    occ_full = full.occupancy_from_labels(labels, (1,))
    occ_small = small.occupancy_from_labels(small_labels, (1,))
    both = full.valid & small.valid
    assert both.sum() > 1000
    assert (occ_full[both] == occ_small[both]).mean() > 0.99
