"""README "Adapt to your camera", end to end on a tiny folder dataset made here.

make-bag (a real rosbag2) -> extract-frames -> masks + classes.yaml -> train --init-from -> eval ->
the fine-tuned checkpoint in a Segmenter, all through the `pspnet` command.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from pspnet_ros.models import read_checkpoint
from pspnet_ros.tools.cli import main as pspnet
from pspnet_ros.tools.training.config import load_config

from pspnet_test_helpers import make_tiny_checkpoint

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[2]
H, W = 32, 48
SKY, ROAD, BOX = (90, 140, 230), (100, 100, 100), (200, 30, 30)


def scene(i: int):
    """Return a frame (sky over road, a red box moving along) and its class ids (0 sky, 1 road, 2 obstacle)."""
    ids = np.zeros((H, W), np.uint8)
    ids[H // 2:] = 1
    x = 4 + 6 * i
    ids[H // 2 - 4: H // 2 + 6, x: x + 8] = 2
    rgb = np.zeros((H, W, 3), np.uint8)
    for k, c in enumerate((SKY, ROAD, BOX)):
        rgb[ids == k] = c
    return rgb, ids


def test_record_extract_label_finetune_evaluate_load(tmp_path, capsys):
    # Record: a camera's frames in a rosbag2 (here written by `pspnet make-bag`).
    frames = tmp_path / "camera"
    frames.mkdir()
    for i in range(6):
        Image.fromarray(scene(i)[0]).save(frames / f"{i:02d}.png")
    bag = tmp_path / "drive_bag"
    assert pspnet(["make-bag", str(frames), "--out", str(bag), "--rate", "10", "--start-time", "1700000000",
                   "--no-progress"]) == 0
    # Extract: every frame, named by stamp, with its camera_info.
    root = tmp_path / "my_data"
    assert pspnet(["extract-frames", str(bag), "--out", str(root / "images"), "--every", "1"]) == 0
    stems = sorted(p.stem for p in (root / "images").glob("*.png"))
    assert len(stems) == 6 and len(list((root / "images").glob("*.yaml"))) == 6
    # Label: one indexed mask per frame (the frames are in time order: frame i is scene i).
    (root / "masks").mkdir()
    for i, stem in enumerate(stems):
        ids = scene(i)[1]
        ids[:2] = 255  # an unlabelled strip
        Image.fromarray(ids).save(root / "masks" / f"{stem}.png")
    (root / "classes.yaml").write_text(yaml.safe_dump({
        "classes": [{"name": "sky", "color": list(SKY)}, {"name": "road", "color": list(ROAD), "drivable": True},
                    {"name": "obstacle", "color": list(BOX)}],
        "ignore_index": 255}, sort_keys=False))
    (root / "train.txt").write_text("\n".join(stems[:4]) + "\n")
    (root / "val.txt").write_text("\n".join(stems[4:]) + "\n")
    # Fine-tune from a (tiny) shipped-style model of another class count: 2 iterations.
    init = make_tiny_checkpoint(tmp_path / "shipped.pt")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({
        "model": {"backbone": "resnet18", "output_stride": 8, "head_channels": 32, "aux": False},
        "data": {"dataset": "folder", "root": str(root), "crop_size": [H, W], "scale_range": [1.0, 1.0],
                 "rotate": 0, "blur_p": 0, "jitter_p": 0, "eval_size": [H, W], "workers": 0},
        "optim": {"epochs": 2, "batch_size": 2, "lr": 0.01, "warmup_iters": 0, "max_iters_per_epoch": 1},
        "output_dir": str(tmp_path / "run"), "threads": 1}))
    assert pspnet(["train", str(recipe), "--init-from", str(init)]) == 0
    best = tmp_path / "run" / "best.pt"
    meta = read_checkpoint(best)["meta"]
    assert meta["dataset"] == "folder" and meta["classes"] == ["sky", "road", "obstacle"]
    assert meta["palette"] == [list(SKY), list(ROAD), list(BOX)] and meta["drivable_classes"] == ["road"]
    assert meta["input_size"] == [H, W] and meta["arch_kwargs"]["num_classes"] == 3
    assert meta["mean"] == read_checkpoint(init)["meta"]["mean"]  # the backbone's normalization
    # Evaluate on the val stems.
    capsys.readouterr()
    report = tmp_path / "eval.json"
    assert pspnet(["eval", "--checkpoint", str(best), "--dataset", "folder", "--root", str(root),
                   "--device", "cpu", "--threads", "1", "--json", str(report)]) == 0
    assert "dataset: folder split=val images=2" in capsys.readouterr().out
    result = json.loads(report.read_text())
    assert set(result["iou"]) == {"sky", "road", "obstacle"} and 0.0 <= result["miou"] <= 1.0
    # Quantize: calibrated on the folder's train frames, checked on its val frames.
    assert pspnet(["quantize", "--checkpoint", str(best), "--dataset", "folder", "--root", str(root),
                   "--calib-frames", "2", "--threads", "1"]) in (0, 1)  # 1: accuracy not within tolerance
    out = capsys.readouterr().out
    assert "folder val (2 frames" in out and "ONNX Runtime: miou" in out  # checked on every INT8 backend
    assert (tmp_path / "run" / "best.int8.onnx").is_file()
    # The node's engine loads it (checkpoint:= on the node) and labels a frame with the new classes.
    from pspnet_ros.inference import Segmenter

    frame = np.asarray(Image.open(root / "images" / f"{stems[5]}.png").convert("RGB"))
    for precision, backend in (("fp32", "torch"), ("int8", "onnxruntime")):
        seg = Segmenter.from_checkpoint(str(best), device="cpu", precision=precision, backend=backend,
                                        num_threads=1)
        assert list(seg.classes) == ["sky", "road", "obstacle"] and seg.precision == precision
        labels = seg.predict(frame, outputs=("labels",))[0].labels
        assert labels.shape == (H, W) and int(labels.max()) < 3


def test_example_recipe_matches_the_shipped_model(tmp_path):
    """config/folder_example.yaml + --init-from models/kitti_road_lite0.pt copies every layer."""
    cfg = load_config(str(REPO / "config" / "folder_example.yaml"), [f"data.root={tmp_path}"])
    assert cfg.data.dataset == "folder" and cfg.model.pretrained is None
    shipped = read_checkpoint(REPO / "models" / "kitti_road_lite0.pt")["meta"]["arch_kwargs"]
    assert cfg.model.kwargs(shipped["num_classes"]) == shipped


def test_eval_refuses_a_folder_whose_classes_differ_from_the_checkpoint(tmp_path, capsys):
    root = tmp_path / "d"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.yaml").write_text("classes: [{name: a, color: [1, 2, 3]}, {name: b, color: [4, 5, 6]}]\n")
    ckpt = make_tiny_checkpoint(tmp_path / "k.pt")  # not_road, road
    assert pspnet(["eval", "--checkpoint", str(ckpt), "--dataset", "folder", "--root", str(root),
                   "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "has the classes ['not_road', 'road']" in err and "lists ['a', 'b']" in err
    # With the checkpoint's classes, a folder scores a model trained elsewhere (the shipped one on your frames).
    (root / "classes.yaml").write_text("classes: [{name: not_road, color: [255, 0, 0]}, "
                                       "{name: road, color: [255, 0, 255], drivable: true}]\n")
    Image.fromarray(scene(0)[0]).save(root / "images" / "a.png")
    Image.fromarray(np.minimum(scene(0)[1], 1)).save(root / "masks" / "a.png")
    assert pspnet(["eval", "--checkpoint", str(ckpt), "--dataset", "folder", "--root", str(root), "--split", "all",
                   "--device", "cpu", "--threads", "1"]) == 0
    assert "dataset: folder split=all images=1" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        pspnet(["eval", "--dataset", "folder", "--root", str(root), "--device", "cpu", "--bogus"])
