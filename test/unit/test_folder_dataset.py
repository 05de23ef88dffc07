"""Folder dataset (your own camera): classes.yaml, layout checks with specific errors, --init-from."""

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from pspnet_ros.models import load_model, read_checkpoint
from pspnet_ros.tools.data import (ClassesFileError, FolderDataset, FolderDatasetError, build_dataset,
                                   dataset_meta, load_classes_yaml)
from pspnet_ros.tools.training.train import main as train_main

from pspnet_test_helpers import make_tiny_checkpoint

torch.set_num_threads(1)
CLASSES = {"classes": [{"name": "background", "color": [0, 0, 0]},
                       {"name": "road", "color": [128, 64, 128], "drivable": True},
                       {"name": "obstacle", "color": [220, 20, 60]}],
           "ignore_index": 255}


def write_folder(root: Path, n=4, h=32, w=48, classes=CLASSES, mode="L", lists=True) -> Path:
    """Write a folder dataset: images/, masks/ (3 classes and some ignore), classes.yaml, train/val.txt."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    stems = [f"frame_{i:03d}" for i in range(n)]
    for stem in stems:
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / "images" / f"{stem}.png")
        ids = np.zeros((h, w), np.uint8)
        ids[h // 2:] = 1
        ids[h // 2:, : w // 4] = 2
        ids[:2] = 255
        if mode == "P":
            im = Image.frombytes("P", (w, h), ids.tobytes())  # palette index = class id
            # A full 256-entry palette, as VOC-style exports write: with a 3-colour palette Pillow
            # saves a 2-bit PNG and the ignore value 255 would not survive.
            colors = sum((c["color"] for c in classes["classes"]), [])
            im.putpalette(colors + [0] * (768 - len(colors)))
            im.save(root / "masks" / f"{stem}.png")
        else:
            Image.fromarray(ids).save(root / "masks" / f"{stem}.png")
    (root / "classes.yaml").write_text(yaml.safe_dump(classes, sort_keys=False))
    if lists:
        (root / "train.txt").write_text("\n".join(stems[:-1]) + "\n")
        (root / "val.txt").write_text(stems[-1] + "\n")
    return root


def test_classes_yaml_becomes_the_checkpoint_meta(tmp_path):
    root = write_folder(tmp_path / "d")
    meta = dataset_meta("folder", root)
    assert meta["dataset"] == "folder"
    assert meta["classes"] == ["background", "road", "obstacle"]
    assert meta["palette"] == [[0, 0, 0], [128, 64, 128], [220, 20, 60]]
    assert meta["drivable_classes"] == ["road"] and meta["ignore_index"] == 255


@pytest.mark.parametrize("mode", ["L", "P"])
def test_indexed_masks_load_as_class_ids(tmp_path, mode):
    root = write_folder(tmp_path / "d", mode=mode)
    ds = build_dataset("folder", root, "train")
    assert len(ds) == 3 and len(build_dataset("folder", root, "val")) == 1
    assert len(build_dataset("folder", root, "all")) == 4
    image, mask = ds.load(0)
    assert image.shape == (32, 48, 3) and mask.dtype == np.uint8
    assert set(np.unique(mask).tolist()) == {0, 1, 2, 255}


def test_rgb_masks_map_through_the_class_colours(tmp_path):
    classes = dict(CLASSES, ignore_color=[255, 255, 255])
    root = write_folder(tmp_path / "d", classes=classes)
    palette = {0: (0, 0, 0), 1: (128, 64, 128), 2: (220, 20, 60), 255: (255, 255, 255)}
    mask_file = root / "masks" / "frame_000.png"
    ids = np.array(Image.open(mask_file))
    rgb = np.zeros(ids.shape + (3,), np.uint8)
    for k, c in palette.items():
        rgb[ids == k] = c
    Image.fromarray(rgb).save(mask_file)
    assert np.array_equal(build_dataset("folder", root, "all").load(0)[1], ids)
    rgb[0, 0] = (1, 2, 3)
    Image.fromarray(rgb).save(mask_file)
    with pytest.raises(FolderDatasetError, match=r"frame_000.png: RGB colour\(s\) \[1, 2, 3\] are no class colour"):
        build_dataset("folder", root, "all")


def test_mask_of_another_size_names_both_files_and_sizes(tmp_path):
    root = write_folder(tmp_path / "d")
    Image.fromarray(np.zeros((30, 48), np.uint8)).save(root / "masks" / "frame_001.png")
    with pytest.raises(FolderDatasetError) as err:
        build_dataset("folder", root, "train")
    msg = str(err.value)
    assert "masks/frame_001.png is 48x30 but its image" in msg and "images/frame_001.png is 48x32" in msg


def test_unknown_class_ids_name_the_file_ids_and_valid_range(tmp_path):
    root = write_folder(tmp_path / "d")
    ids = np.zeros((32, 48), np.uint8)
    ids[0, :3] = [3, 7, 254]
    Image.fromarray(ids).save(root / "masks" / "frame_002.png")
    with pytest.raises(FolderDatasetError) as err:
        build_dataset("folder", root, "all")
    msg = str(err.value)
    assert "frame_002.png: class id(s) 3, 7, 254 not in classes.yaml" in msg
    assert "valid: 0-2 for background, road, obstacle; 255 = ignore_index" in msg


def test_missing_files_are_named_both_ways(tmp_path):
    root = write_folder(tmp_path / "d")
    (root / "masks" / "frame_001.png").unlink()       # an image without its mask
    (root / "images" / "frame_003.png").unlink()      # a mask without its image
    with pytest.raises(FolderDatasetError) as err:
        build_dataset("folder", root, "all")
    msg = str(err.value)
    assert "masks without an image" in msg and "masks/frame_003.png" in msg
    assert "images without a mask" in msg and "images/frame_001.png" in msg
    (root / "images" / "frame_003.png").write_bytes((root / "images" / "frame_000.png").read_bytes())
    (root / "train.txt").write_text("frame_000\nframe_009\n")  # a listed stem without an image
    with pytest.raises(FolderDatasetError, match=r"stems in .*train.txt without an image.*\n  frame_009"):
        build_dataset("folder", root, "train")
    with pytest.raises(FolderDatasetError, match=r"split 'test' needs the stem list .*test.txt"):
        build_dataset("folder", root, "test")


@pytest.mark.parametrize("text, match", [
    ("classes: [", "not valid YAML"),
    ("- road\n", "expected a mapping with a 'classes' list"),
    ("classes: [{name: road, color: [1, 2, 3]}]\n", "at least 2 classes"),
    ("classes: [{name: a, color: [1, 2, 3]}, {name: b}]\n", r"classes\[1\] \(b\): 'color' \[r, g, b\] is missing"),
    ("classes: [{name: a, color: [1, 2, 3]}, {name: b, color: [1, 2, 300]}]\n", "three integers 0-255"),
    ("classes: [{name: a, color: [1, 2, 3]}, {name: a, color: [4, 5, 6]}]\n", "'a' repeats classes"),
    ("classes: [{name: a, color: [1, 2, 3]}, {name: b, color: [4, 5, 6], drivable: yes please}]\n",
     "'drivable' must be true or false"),
    ("classes: [{name: a, color: [1, 2, 3]}, {name: b, color: [4, 5, 6]}]\nignore_index: 1\n",
     "ignore_index must be an integer from 2"),
    ("classes: [{name: a, colour: [1, 2, 3]}, {name: b, color: [4, 5, 6]}]\n", r"unknown key\(s\) colour"),
    ("clases: []\n", r"unknown key\(s\) clases"),
])
def test_malformed_classes_yaml_is_named_and_explained(tmp_path, text, match):
    path = tmp_path / "classes.yaml"
    path.write_text(text)
    with pytest.raises(ClassesFileError, match=match) as err:
        load_classes_yaml(path)
    assert str(path) in str(err.value) and "expected, for example" in str(err.value)


def test_missing_classes_yaml_and_folders(tmp_path):
    root = write_folder(tmp_path / "d")
    (root / "classes.yaml").unlink()
    with pytest.raises(ClassesFileError, match="classes.yaml: file not found"):
        FolderDataset(root, "all")
    with pytest.raises(ValueError, match="needs its folder"):
        dataset_meta("folder")


def folder_recipe(tmp_path, root, **model):
    cfg = {"model": dict({"backbone": "resnet18", "output_stride": 8, "head_channels": 32, "aux": False}, **model),
           "data": {"dataset": "folder", "root": str(root), "crop_size": [32, 48], "scale_range": [1.0, 1.0],
                    "rotate": 0, "blur_p": 0, "flip_p": 0, "jitter_p": 0, "eval_size": [32, 48], "workers": 0},
           "optim": {"epochs": 1, "batch_size": 2, "lr": 0.0, "warmup_iters": 0, "max_iters_per_epoch": 1},
           "output_dir": str(tmp_path / "run"), "threads": 1}
    p = tmp_path / "recipe.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def test_init_from_with_the_same_class_count_copies_everything(tmp_path):
    classes = {"classes": [{"name": "ground", "color": [255, 0, 0]},
                           {"name": "path", "color": [255, 0, 255], "drivable": True}]}
    root = write_folder(tmp_path / "d", classes=classes)
    ids_to_two = root / "masks"
    for f in ids_to_two.iterdir():  # 2 classes: obstacle (2) becomes ground
        ids = np.array(Image.open(f))
        ids[ids == 2] = 0
        Image.fromarray(ids).save(f)
    src = make_tiny_checkpoint(tmp_path / "tiny.pt")  # kitti_road: 2 classes
    assert train_main([str(folder_recipe(tmp_path, root)), "--init-from", str(src)]) == 0
    model, meta = load_model(tmp_path / "run" / "last.pt")
    assert meta["classes"] == ["ground", "path"] and meta["drivable_classes"] == ["path"]
    theirs = read_checkpoint(src)["model"]
    ours = model.state_dict()
    # lr 0: every tensor, the classifier too, is the checkpoint's (BatchNorm running stats move in train mode)
    for k, v in theirs.items():
        if "running_" not in k and "num_batches" not in k:
            assert torch.equal(ours[k], v.float()), k


def test_init_from_with_another_class_count_reinitializes_only_the_classifier(tmp_path, capsys):
    # Messages are read from stderr: launch_testing's pytest plugin makes loggers not propagate (test_bags).
    root = write_folder(tmp_path / "d")  # 3 classes
    src = make_tiny_checkpoint(tmp_path / "tiny.pt")  # 2 classes
    assert train_main([str(folder_recipe(tmp_path, root)), "--init-from", str(src)]) == 0
    assert "differs from the checkpoint's" not in capsys.readouterr().err
    theirs = read_checkpoint(src)["model"]
    ours = read_checkpoint(tmp_path / "run" / "last.pt")["model"]
    differ = sorted(k for k in theirs if ours[k].shape != theirs[k].shape)
    assert differ == ["head.4.bias", "head.4.weight"]
    assert ours["head.4.weight"].shape[0] == 3
    assert torch.equal(ours["backbone.body.layer4.1.conv2.weight"], theirs["backbone.body.layer4.1.conv2.weight"])
    # A recipe whose model differs from the checkpoint's (beyond the classes) is warned about.
    assert train_main([str(folder_recipe(tmp_path, root, head_channels=16)), "--init-from", str(src),
                       "--output-dir", str(tmp_path / "run2")]) == 0
    assert "differs from the checkpoint's in head_channels (16 vs 32)" in capsys.readouterr().err


def test_train_on_a_broken_folder_says_what_to_fix(tmp_path, capsys):
    root = write_folder(tmp_path / "d")
    (root / "masks" / "frame_000.png").unlink()
    assert train_main([str(folder_recipe(tmp_path, root))]) == 2
    err = capsys.readouterr().err
    assert "images without a mask" in err and "images/frame_000.png" in err
    (root / "classes.yaml").write_text("classes: {}\n")
    assert train_main([str(folder_recipe(tmp_path, root))]) == 2
    assert "'classes' must be a list" in capsys.readouterr().err
