"""Pre/post-processing ops.

Exact outputs on hand-made maps, and the torch ("GPU") and numpy (CPU fast path) implementations
give the same bytes.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pspnet_ros.inference import ops

PALETTE = np.array([[255, 0, 0], [255, 0, 255], [0, 10, 20]], np.uint8)


def luts(drivable=(1,)):
    return ops.Luts(PALETTE, drivable, torch.device("cpu"))


def test_colorize_drivable_and_overlay_on_a_hand_made_label_map():
    labels = np.array([[0, 1, 2], [2, 1, 0]], np.uint8)
    rgb = np.array([[[0, 0, 0], [100, 100, 100], [255, 255, 255]],
                    [[10, 20, 30], [1, 2, 3], [200, 0, 50]]], np.uint8)
    lut = luts(drivable=(1, 2))
    expect_color = np.array([[[255, 0, 0], [255, 0, 255], [0, 10, 20]],
                             [[0, 10, 20], [255, 0, 255], [255, 0, 0]]], np.uint8)
    expect_drivable = np.array([[0, 255, 255], [255, 255, 0]], np.uint8)
    # alpha 0.5 -> w = 128: (a + b + 1) // 2, i.e. halves round up
    expect_overlay = (rgb.astype(int) + expect_color + 1) // 2
    t = torch.from_numpy(labels)[None]
    color_t = ops.colorize(t, lut.color)[0].numpy()
    np.testing.assert_array_equal(color_t, expect_color)
    np.testing.assert_array_equal(ops.colorize_np(labels, lut.color_np), expect_color)
    np.testing.assert_array_equal(ops.colorize_np(labels, lut.color_np, lut.color_packed), expect_color)
    np.testing.assert_array_equal(ops.drivable_mask(t, lut.drivable)[0].numpy(), expect_drivable)
    np.testing.assert_array_equal(ops.drivable_np(labels, lut.drivable_np), expect_drivable)
    w = ops.alpha_weight(0.5)
    assert w == 128
    np.testing.assert_array_equal(ops.blend(torch.from_numpy(rgb), torch.from_numpy(expect_color), w).numpy(),
                                  expect_overlay)
    np.testing.assert_array_equal(ops.blend_np(rgb, expect_color, w), expect_overlay)


def test_overlay_alpha_extremes_and_unknown_labels():
    rgb = np.full((2, 2, 3), 77, np.uint8)
    color = np.full((2, 2, 3), 200, np.uint8)
    for impl in (lambda a, b, w: ops.blend(torch.from_numpy(a), torch.from_numpy(b), w).numpy(), ops.blend_np):
        np.testing.assert_array_equal(impl(rgb, color, 0), rgb)
        np.testing.assert_array_equal(impl(rgb, color, 256), color)
        np.testing.assert_array_equal(impl(rgb, color, 64), np.full((2, 2, 3), (77 * 192 + 200 * 64 + 128) >> 8))
    # labels outside the palette are black, never an index error
    odd = np.array([[3, 254]], np.uint8)
    np.testing.assert_array_equal(ops.colorize_np(odd, luts().color_np), np.zeros((1, 2, 3), np.uint8))
    np.testing.assert_array_equal(ops.colorize(torch.from_numpy(odd), luts().color).numpy(),
                                  np.zeros((1, 2, 3), np.uint8))


@pytest.mark.parametrize("w", [1, 37, 128, 200, 255])
def test_blend_numpy_and_torch_agree_for_every_byte_pair(w):
    a = np.repeat(np.arange(256, dtype=np.uint8), 256).reshape(256, 256, 1).repeat(3, 2)
    b = np.tile(np.arange(256, dtype=np.uint8), 256).reshape(256, 256, 1).repeat(3, 2)
    ref = ((a.astype(np.int32) * (256 - w) + b.astype(np.int32) * w + 128) >> 8).astype(np.uint8)
    np.testing.assert_array_equal(ops.blend(torch.from_numpy(a), torch.from_numpy(b), w).numpy(), ref)
    np.testing.assert_array_equal(ops.blend_np(a, b, w), ref)


def test_argmax_ties_go_to_the_lowest_class_like_torch():
    logits = torch.tensor([[[[1.0, 2.0, 3.0]], [[1.0, 5.0, 3.0]], [[0.5, 5.0, 3.0]]]])  # (1, 3, 1, 3)
    assert ops.argmax_labels(logits).tolist() == [[[0, 1, 0]]]
    g = torch.Generator().manual_seed(0)
    for k in (2, 5, 40):
        x = torch.randn(2, k, 7, 9, generator=g).round()  # rounding makes ties common
        assert torch.equal(ops.argmax_labels(x), x.argmax(1).to(torch.uint8))


def test_nearest_resize_is_pixel_centre_and_same_in_both_implementations():
    x = np.arange(6, dtype=np.uint8).reshape(2, 3)
    up = ops.resize_nearest_np(x, (4, 6))
    np.testing.assert_array_equal(up, np.repeat(np.repeat(x, 2, 0), 2, 1))
    # downscale 4 -> 2: output centres 0.5, 1.5 map to 1.0, 3.0 -> source pixels 1 and 3
    assert ops.nearest_index(4, 2).tolist() == [1, 3]
    assert ops.nearest_index(3, 7).tolist() == [0, 0, 1, 1, 1, 2, 2]  # floor((i + 0.5) * 3 / 7)
    rng = np.random.default_rng(1)
    for (h, w), size in [((12, 39), (375, 1242)), ((188, 621), (370, 1224)), ((5, 7), (3, 2))]:
        lab = rng.integers(0, 11, (h, w), dtype=np.uint8)
        got_t = ops.resize_nearest(torch.from_numpy(lab)[None], size)[0].numpy()
        np.testing.assert_array_equal(got_t, ops.resize_nearest_np(lab, size))


def test_confidence_is_rounded_max_softmax():
    logits = torch.tensor([[[[0.0, 10.0]], [[0.0, 0.0]]]])  # (1, 2, 1, 2)
    p = 1 / (1 + np.exp(-10.0))
    assert ops.confidence_u8(logits).tolist() == [[[128, round(255 * p)]]]


def test_preprocess_resizes_and_normalizes_like_the_definition():
    frames = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 8, 12, 3), dtype=np.uint8))
    mean = torch.tensor([0.4, 0.5, 0.6]).view(1, 3, 1, 1) * 255
    std = torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1) * 255
    x, small = ops.preprocess(frames, (4, 6), mean, 1 / std, keep_resized=True)
    ref = torch.nn.functional.interpolate(frames.permute(0, 3, 1, 2).float(), size=(4, 6),
                                          mode="bilinear", align_corners=False)
    torch.testing.assert_close(x, (ref - mean) / std)
    assert small.shape == (2, 4, 6, 3) and small.dtype == torch.uint8
    torch.testing.assert_close(small.permute(0, 3, 1, 2).float(), ref.round(), atol=0, rtol=0)
    same, _ = ops.preprocess(frames, (8, 12), mean, 1 / std, channels_last=True)
    assert same.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(same, (frames.permute(0, 3, 1, 2).float() - mean) / std)


def test_opencv_preprocess_is_within_one_grey_level_of_the_float_definition():
    frames = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (2, 75, 249, 3), dtype=np.uint8))
    mean, std = np.array([127.0, 120.0, 110.0], np.float32), np.array([128.0, 60.0, 64.0], np.float32)
    ref, ref_small = ops.preprocess(frames, (38, 125), torch.from_numpy(mean).view(1, 3, 1, 1),
                                    torch.from_numpy(1 / std).view(1, 3, 1, 1), keep_resized=True)
    x, small = ops.preprocess_np(frames.numpy(), (38, 125), mean, 1 / std, keep_resized=True)
    assert x.shape == ref.shape == (2, 3, 38, 125) and x.dtype == torch.float32 and x.is_contiguous()
    grey = (x - ref).abs() * torch.from_numpy(std).view(1, 3, 1, 1)  # back in grey levels
    assert float(grey.max()) <= 1.0
    assert int((small.int() - ref_small.int()).abs().max()) <= 1
    same, _ = ops.preprocess_np(frames.numpy(), (75, 249), mean, 1 / std)  # no resize: exact
    torch.testing.assert_close(same, (frames.permute(0, 3, 1, 2).float() - torch.from_numpy(mean).view(1, 3, 1, 1))
                               / torch.from_numpy(std).view(1, 3, 1, 1))


@pytest.mark.parametrize("k", [2, 3, 11])
def test_opencv_logit_upsampling_gives_the_argmax_of_the_bilinear_logits(k):
    g = torch.Generator().manual_seed(k)
    logits = torch.randn(2, k, 19, 62, generator=g) * 3
    up = torch.nn.functional.interpolate(logits, size=(38, 125), mode="bilinear", align_corners=False)
    ref = up.argmax(1).numpy()
    got = ops.upsample_labels_np(logits.numpy(), (38, 125))
    assert got.shape == ref.shape and got.dtype == np.uint8
    top2 = up.topk(2, dim=1).values
    margin = (top2[:, 0] - top2[:, 1]).numpy()
    assert (got[margin > 1e-4] == ref[margin > 1e-4]).all()  # only float-rounding ties may differ
    assert (got == ref).mean() > 0.999


@pytest.mark.parametrize("upsample", ["logits", "labels"])
@pytest.mark.parametrize("k", [2, 3])
def test_postprocess_torch_path_on_cpu_tensors_equals_the_numpy_path(upsample, k):
    g = torch.Generator().manual_seed(k)
    logits = torch.randn(2, k, 9, 13, generator=g) * 3
    rgb = torch.randint(0, 256, (2, 30, 41, 3), generator=g, dtype=torch.uint8)
    spec = ops.PostSpec(frozenset({"labels", "color", "overlay", "drivable", "confidence"}), (30, 41),
                        upsample, ops.alpha_weight(0.3))
    a = ops.postprocess(logits, rgb, spec, luts(), impl="torch")
    b = ops.postprocess(logits, rgb, spec, luts(), impl="numpy")
    for j in range(2):
        same = a["labels"][j].numpy() == b["labels"][j]
        assert same.mean() > 0.99  # OpenCV upsampling: only float-rounding ties may differ
        for key in ("color", "overlay", "drivable"):
            np.testing.assert_array_equal(a[key][j].numpy()[same], b[key][j][same], err_msg=key)
        np.testing.assert_array_equal(a["confidence"][j].numpy(), b["confidence"][j])
    assert a["labels"].shape == (2, 30, 41) and a["color"].shape == (2, 30, 41, 3)


def test_upsample_modes_differ_only_at_boundaries():
    # A smooth two-class score ramp: 'logits' moves the boundary to sub-pixel accuracy, 'labels'
    # repeats the low-res decision; both agree away from the boundary.
    x = torch.linspace(-1, 1, 8).view(1, 1, 1, 8).expand(1, 1, 4, 8)
    logits = torch.cat([torch.zeros_like(x), x + 0.1], 1)
    spec = lambda up: ops.PostSpec(frozenset({"labels"}), (16, 32), up)  # noqa: E731
    by_logits = ops.postprocess(logits, None, spec("logits"), luts())["labels"][0].numpy()
    by_labels = ops.postprocess(logits, None, spec("labels"), luts())["labels"][0].numpy()
    assert by_logits.shape == by_labels.shape == (16, 32)
    assert (by_logits[:, :10] == 0).all() and (by_logits[:, 20:] == 1).all()
    assert (by_labels[:, :10] == 0).all() and (by_labels[:, 20:] == 1).all()
    # each row switches from 0 to 1 exactly once
    for row in (by_logits[0], by_labels[0]):
        assert int(np.count_nonzero(np.diff(row.astype(int)))) == 1
