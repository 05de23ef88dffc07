"""Cross-camera training pieces.

Aspect-true sizes, pixel-budget resize, random aspect, CamVid road-as-drivable labels, and a run
mixing two datasets with two val sets.
"""

import csv
import random

import pytest
import torch
import yaml

from pspnet_ros.tools.data.datasets import CamVidDrivable
from pspnet_ros.tools.data.transforms import RandomAspect, ResizeImageAuto, ResizeToArea
from pspnet_ros.inference.sizing import auto_inference_size, parse_inference_size
from pspnet_ros.models import load_model
from pspnet_ros.tools.training.config import load_config
from pspnet_ros.tools.training.train import main as train_main

from fake_data import camvid_label, write_camvid, write_kitti

torch.set_num_threads(1)


@pytest.mark.parametrize("frame,expected", [
    ((375, 1242), (188, 621)),   # the model's own aspect: its exact size
    ((370, 1224), (188, 621)),   # KITTI frames vary by a few pixels: same aspect within 1 %
    ((480, 640), (288, 400)),    # 4:3: 295.9 x 394.6 rounded to 16
    ((720, 1280), (256, 448)),   # 16:9
    ((1080, 1920), (256, 448)),
    ((360, 480), (288, 400)),
    ((100, 120), (100, 120)),    # smaller than the budget: its own size, never upscaled
])
def test_auto_size_keeps_aspect_under_the_training_area(frame, expected):
    h, w = auto_inference_size(frame, (188, 621))
    assert (h, w) == expected
    assert h % 16 == 0 or (h, w) in ((188, 621), frame)
    # aspect within what 16-pixel rounding allows, area within the budget +-10 %
    assert abs((w / h) / (frame[1] / frame[0]) - 1) < 0.06
    if frame[0] * frame[1] > 188 * 621:
        assert 0.9 < h * w / (188 * 621) < 1.1


def test_auto_size_explicit_budget_and_errors():
    assert auto_inference_size((480, 640), None, pixel_budget=480 * 640) == (480, 640)
    with pytest.raises(ValueError, match="input size or a pixel budget"):
        auto_inference_size((480, 640))
    with pytest.raises(ValueError, match="positive"):
        auto_inference_size((0, 640), (188, 621))


def test_parse_inference_size():
    assert parse_inference_size("auto") is None and parse_inference_size(None) is None
    assert parse_inference_size("256x341") == (256, 341) and parse_inference_size([188, 621]) == (188, 621)
    assert parse_inference_size([]) is None
    for bad in ("big", "12x", [1, 2, 3], "0x8", [9000, 10]):
        with pytest.raises(ValueError):
            parse_inference_size(bad)


def test_resize_to_area_and_random_aspect_keep_mask_nearest():
    img = torch.randint(0, 255, (3, 360, 480), dtype=torch.uint8)
    mask = torch.zeros(360, 480, dtype=torch.int64)
    mask[:, 240:] = 1
    i2, m2 = ResizeToArea(188 * 621)(img, mask)
    assert abs(i2.shape[-1] / i2.shape[-2] - 480 / 360) < 0.01
    assert abs(i2.shape[-1] * i2.shape[-2] / (188 * 621) - 1) < 0.01
    assert set(m2.unique().tolist()) == {0, 1}
    random.seed(0)
    widths = set()
    for _ in range(20):
        i3, m3 = RandomAspect((0.8, 1.25))(i2, m2)
        assert i3.shape[-2] == i2.shape[-2] and m3.shape == i3.shape[-2:]
        assert 0.79 <= i3.shape[-1] / i2.shape[-1] <= 1.26
        assert set(m3.unique().tolist()) <= {0, 1}
        widths.add(i3.shape[-1])
    assert len(widths) > 5  # it does vary
    with pytest.raises(ValueError):
        RandomAspect((1.2, 0.8))


def test_resize_image_auto_keeps_full_mask():
    img, mask = torch.zeros(3, 480, 640, dtype=torch.uint8), torch.zeros(480, 640, dtype=torch.int64)
    i2, m2 = ResizeImageAuto((188, 621))(img, mask)
    assert tuple(i2.shape[-2:]) == (288, 400) and tuple(m2.shape) == (480, 640)


def test_camvid_drivable_maps_road_to_drivable(tmp_path):
    root = write_camvid(tmp_path / "camvid")
    ds = CamVidDrivable(root, "train")
    _, mask = ds[0]
    h, w = mask.shape
    ref = torch.from_numpy(camvid_label(h, w).astype("int64"))
    assert (mask[ref == 3] == 1).all()      # road -> road
    assert (mask[ref == 8] == 0).all()      # car -> not road
    assert (mask[ref == 11] == 255).all()   # void -> ignore


def test_mixed_sources_train_and_select_on_both_val_sets(tmp_path):
    kitti = write_kitti(tmp_path / "kitti_road", n_train=2, n_val=1)
    write_camvid(tmp_path / "camvid", h=36, w=48)
    assert kitti.parent == tmp_path
    cfg = {
        "model": {"backbone": "resnet18", "output_stride": 8, "head_channels": 16, "aux": True},
        "data": {"dataset": "kitti_road", "root": str(tmp_path), "crop_size": [32, 64],
                 "train_sets": [["kitti_road", "train", 2], ["camvid_drivable", "train", 1]],
                 "val_sets": [["kitti_road", "val"], ["camvid_drivable", "val"]],
                 "pixel_budget": 32 * 64, "aspect_range": [0.8, 1.25], "scale_range": [1.0, 1.0],
                 "rotate": 0, "blur_p": 0, "flip_p": 0, "jitter_p": 0, "eval_size": [32, 64],
                 "cache": True, "workers": 0},
        "optim": {"epochs": 2, "batch_size": 2, "lr": 0.01, "warmup_iters": 0, "max_iters_per_epoch": 2},
        "output_dir": str(tmp_path / "run"), "seed": 0, "eval_every": 1, "threads": 1,
    }
    path = tmp_path / "mix.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert train_main([str(path)]) == 0
    rows = list(csv.DictReader((tmp_path / "run" / "log.csv").open()))
    assert len(rows) == 2
    for r in rows:
        kitti_maxf, cam_iou = float(r["kitti_road_val_metric"]), float(r["camvid_drivable_val_metric"])
        assert float(r["val_score"]) == pytest.approx((kitti_maxf + cam_iou) / 2, abs=1e-4)
    _, meta = load_model(tmp_path / "run" / "best.pt")
    assert meta["classes"] == ["not_road", "road"]
    assert set(meta["metrics"]["val_sets"]) == {"kitti_road_val", "camvid_drivable_val"}
    assert "maxf" in meta["metrics"]["val_sets"]["kitti_road_val"]


def test_mixed_source_config_errors(tmp_path):
    with pytest.raises(ValueError, match="label space"):
        load_config(None, ["data.dataset=kitti_road", "data.train_sets=[[camvid, train, 1]]"])
    with pytest.raises(ValueError, match="repeat"):
        load_config(None, ["data.train_sets=[[kitti_road, train, 0]]"])
    with pytest.raises(ValueError, match="unknown dataset"):
        load_config(None, ["data.val_sets=[[cityscapes, val]]"])
    with pytest.raises(ValueError, match=r"\[dataset, split\]"):
        load_config(None, ["data.val_sets=[[kitti_road]]"])


def test_center_crop_to_aspect_and_parse():
    import numpy as np

    from pspnet_ros.tools.data.datasets import center_crop_to_aspect, parse_aspect

    assert parse_aspect("16:9") == pytest.approx(16 / 9) and parse_aspect("2") == 2.0
    for bad in ("16/9", "0:1", "a:b"):
        with pytest.raises(ValueError):
            parse_aspect(bad)
    img = np.arange(375 * 1242 * 3, dtype=np.uint32).reshape(375, 1242, 3)
    mask = np.arange(375 * 1242, dtype=np.uint32).reshape(375, 1242)
    i2, m2 = center_crop_to_aspect(img, mask, 16 / 9)
    assert m2.shape == (375, 667) and i2.shape[:2] == m2.shape
    assert m2[0, 0] == mask[0, (1242 - 667) // 2] and (i2[..., 0] == img[:, 287:287 + 667, 0]).all()
    i3, m3 = center_crop_to_aspect(img[:, :300], mask[:, :300], 16 / 9)  # too tall: keep the width
    assert m3.shape == (169, 300)


def test_eval_crop_aspect_runs_the_node_path_at_the_cropped_shape(tmp_path, tiny_checkpoint):
    import json

    from pspnet_ros.tools.training.evaluate import main as eval_main

    kitti = write_kitti(tmp_path / "kitti_road", n_train=1, n_val=2, h=60, w=200)
    out = tmp_path / "e.json"
    assert eval_main(["--checkpoint", str(tiny_checkpoint), "--dataset", "kitti_road", "--root", str(kitti),
                      "--precision", "fp32", "--backend", "torch", "--crop-aspect", "16:9",
                      "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["crop_aspect"] == "16:9" and res["images"] == 2 and res["inference_size"] == "auto"
    assert list(res["sizes"]) == ["96x320", "60x107"]  # the model size (built at start), then the frames' own
    assert eval_main(["--checkpoint", str(tiny_checkpoint), "--dataset", "kitti_road", "--root", str(kitti),
                      "--crop-aspect", "16:9", "--bev"]) == 2
