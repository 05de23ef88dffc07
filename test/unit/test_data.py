"""Datasets on fake trees in the real layouts, and paired transforms keeping alignment."""

import random

import numpy as np
import pytest
import torch

from pspnet_ros.tools.data import CamVid, KittiRoad, build_dataset
from pspnet_ros.tools.data.transforms import (RandomCrop, RandomHorizontalFlip, RandomRotation, RandomScale,
                                        Resize, ResizeShort, eval_preset, train_preset)

from fake_data import camvid_label, write_camvid, write_kitti


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_kitti_colour_decoding_and_splits(tmp_path, ext):
    root = write_kitti(tmp_path / "kitti_road", ext=ext)
    train = KittiRoad(tmp_path, "train")  # the parent folder is accepted too
    assert len(train) == 3 and len(KittiRoad(root, "val")) == 2 and len(KittiRoad(root, "all")) == 5
    img, mask = train[0]
    assert img.shape == (3, 48, 96) and img.dtype == torch.uint8 and mask.dtype == torch.int64
    assert (mask[:4] == 255).all()           # black: outside the valid area -> ignore
    assert (mask[4:24] == 0).all()           # red: not road
    assert (mask[24:] == 1).all()            # magenta: road


def test_kitti_list_file_and_missing_gt(tmp_path):
    root = write_kitti(tmp_path / "k")
    lst = tmp_path / "mine.txt"
    lst.write_text("um_000001\num_000004\n")
    assert [KittiRoad(root, str(lst)).stem(i) for i in range(2)] == ["um_000001", "um_000004"]
    (root / "gt_image_2" / "um_road_000000.png").unlink()
    with pytest.raises(FileNotFoundError, match="um_road_000000"):
        KittiRoad(root, "train")


@pytest.mark.parametrize("ext", [".jpg", ".png"])
def test_camvid_segnet_layout_void_to_ignore(tmp_path, ext):
    root = write_camvid(tmp_path / "camvid", ext=ext)
    ds = CamVid(root, "train")
    img, mask = ds[0]
    assert len(ds) == 2 and img.shape == (3, 36, 48)
    expected = torch.from_numpy(camvid_label(36, 48).astype(np.int64))
    expected[expected == 11] = 255
    assert torch.equal(mask, expected)


def test_camvid_list_file_layout(tmp_path):
    root = write_camvid(tmp_path / "camvid")
    lst = tmp_path / "camvid" / "list.txt"
    lst.write_text("train/seq_000001.jpg trainannot/seq_000001.png\n\nval/seq_000000.jpg valannot/seq_000000.png\n")
    ds = CamVid(root, str(lst))
    assert len(ds) == 2 and ds.stem(0) == "seq_000001"
    assert set(ds[1][1].unique().tolist()) == {3, 8, 255}
    bad = tmp_path / "bad.txt"
    bad.write_text("only_one_column.jpg\n")
    with pytest.raises(ValueError, match="expected 'image_path label_path'"):
        CamVid(root, str(bad))


def test_build_dataset_unknown():
    with pytest.raises(ValueError, match="unknown dataset"):
        build_dataset("cityscapes", "/nonexistent", "train")


def _pattern(h=64, w=80):
    """Image whose red channel encodes the class of each pixel, so alignment is checkable."""
    mask = torch.zeros((h, w), dtype=torch.int64)
    mask[: h // 2, : w // 2] = 1
    mask[h // 2:, w // 2:] = 2
    mask[h // 2:, : w // 4] = 3
    img = torch.zeros((3, h, w), dtype=torch.uint8)
    img[0] = (mask * 60).to(torch.uint8)
    img[1] = 128
    return img, mask


@pytest.mark.parametrize("transform", [RandomHorizontalFlip(1.0), RandomScale((0.5, 2.0)),
                                       RandomCrop((40, 50)), RandomRotation(10, p=1.0),
                                       ResizeShort(50), Resize((33, 71)), RandomCrop((100, 120))])
def test_paired_transform_keeps_image_and_mask_aligned(transform):
    random.seed(3)
    torch.manual_seed(3)
    img, mask = _pattern()
    for _ in range(5):
        ti, tm = transform(img, mask)
        assert ti.shape[-2:] == tm.shape and tm.dtype == torch.int64
        valid = tm != 255
        assert valid.float().mean() > 0.3
        # Where the mask is valid, the image's red channel must show the same class.
        # Allow a thin band of mismatches at class borders from bilinear image interpolation.
        recovered = (ti[0].float() / 60).round().long()
        agree = (recovered[valid] == tm[valid]).float().mean()
        assert agree > 0.93, f"{type(transform).__name__}: only {agree:.3f} aligned"
        # Mask values stay class ids or ignore: nearest interpolation never invents values.
        assert set(tm.unique().tolist()) <= {0, 1, 2, 3, 255}


def test_crop_pads_mask_with_ignore_and_rotation_fills_ignore():
    img, mask = _pattern(20, 20)
    ti, tm = RandomCrop((30, 30))(img, mask)
    assert tm.shape == (30, 30) and (tm[20:] == 255).all() and (tm[:, 20:] == 255).all()
    assert (ti[:, 20:] == 0).all()
    random.seed(0)
    _, rm = RandomRotation(10, p=1.0)(*_pattern(64, 64))
    assert (rm == 255).any()  # corners uncovered by the rotation are ignore


def test_presets_output_normalized_float():
    img, mask = _pattern()
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    ti, tm = train_preset(crop_size=(32, 48), base_size=40, mean=mean, std=std)(img, mask)
    assert ti.shape == (3, 32, 48) and ti.dtype == torch.float32 and tm.shape == (32, 48)
    ei, em = eval_preset(size=(32, 40), mean=mean, std=std)(img, mask)
    assert ei.shape == (3, 32, 40) and em.shape == (64, 80)  # labels stay at full size
    assert torch.allclose(ei[1].mean(), torch.tensor((128 / 255 - 0.456) / 0.224), atol=1e-3)
