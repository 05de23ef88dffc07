"""Segmenter: metadata from the checkpoint, synchronous predict, and agreement between code paths.

Agreement between the GPU code path run on CPU tensors, the CPU fast path, ONNX Runtime and the
naive baseline.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pspnet_ros.errors import InputError
from pspnet_ros.inference import FrameResult, Segmenter
from pspnet_ros.tools.naive import NaiveSegmenter
from pspnet_ros.models import read_checkpoint

SMALL = (32, 96)  # inference size for the fast tests


@pytest.fixture(scope="module")
def seg(tiny_checkpoint):
    return Segmenter.from_checkpoint(tiny_checkpoint, device="cpu", backend="torch", inference_size=SMALL)


def frame(h=40, w=100, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_metadata_comes_from_the_checkpoint(tiny_checkpoint):
    meta = read_checkpoint(tiny_checkpoint)["meta"]
    s = Segmenter.from_checkpoint(tiny_checkpoint, device="cpu", backend="torch")
    assert s.classes == ["not_road", "road"] == meta["classes"]
    assert s.palette.dtype == np.uint8 and s.palette.tolist() == meta["palette"]
    assert s.inference_size == tuple(meta["input_size"]) == (96, 320)
    assert s.device == torch.device("cpu") and s.model_name == "tiny_kitti"
    assert s.meta["mean"] == meta["mean"]
    assert Segmenter.from_checkpoint(tiny_checkpoint, device="cpu", backend="torch",
                                     inference_size="48x160").inference_size == (48, 160)


def test_bad_settings_are_refused_with_a_reason(tiny_checkpoint):
    with pytest.raises(ValueError, match="precision"):
        Segmenter.from_checkpoint(tiny_checkpoint, device="cpu", precision="int4")
    with pytest.raises(ValueError, match="no INT8 model for tiny_kitti.pt .* pspnet quantize --checkpoint"):
        Segmenter.from_checkpoint(tiny_checkpoint, device="cpu", precision="int8")
    with pytest.raises(ValueError, match="inference_size"):
        Segmenter.from_checkpoint(tiny_checkpoint, device="cpu", inference_size=(0, 10))
    with pytest.raises(ValueError, match="backend"):
        Segmenter.from_checkpoint(tiny_checkpoint, device="cpu", backend="tensorrt")


def test_predict_returns_every_output_at_the_frame_size(seg):
    f = frame()
    (r,) = seg.predict(f, return_probs=True)
    assert isinstance(r, FrameResult) and r.stamp is None and r.source_id == "default"
    assert r.labels.shape == (40, 100) and r.labels.dtype == np.uint8
    assert set(np.unique(r.labels)) <= {0, 1}
    assert r.color.shape == r.overlay.shape == (40, 100, 3)
    np.testing.assert_array_equal(r.color, seg.palette[r.labels])
    np.testing.assert_array_equal(r.drivable, np.where(r.labels == 1, 255, 0))
    assert r.probs.shape == (2, 40, 100)
    np.testing.assert_allclose(r.probs.sum(0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(r.probs.argmax(0), r.labels)
    np.testing.assert_array_equal(r.confidence, np.round(r.probs.max(0) * 255).astype(np.uint8))
    assert r.input is f


def test_bgr_input_gives_the_same_result_as_rgb(seg):
    f = frame(seed=3)
    a = seg.predict(f)[0]
    b = seg.predict(np.ascontiguousarray(f[..., ::-1]), bgr=True)[0]
    for k in ("labels", "color", "overlay", "drivable", "confidence"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k), err_msg=k)
    np.testing.assert_array_equal(b.input, f)


def test_batch_of_mixed_sizes_and_tensors_keeps_order(seg):
    frames = [frame(40, 100, 1), frame(50, 60, 2), torch.from_numpy(frame(40, 100, 3))]
    res = seg.predict(frames)
    assert [r.labels.shape for r in res] == [(40, 100), (50, 60), (40, 100)]
    for f, r in zip(frames, res):
        np.testing.assert_array_equal(r.labels, seg.predict(f)[0].labels)


def test_network_resolution_outputs(seg):
    r = seg.predict(frame(), output_resolution="network", outputs={"labels", "overlay"})[0]
    assert r.labels.shape == SMALL and r.overlay.shape == SMALL + (3,)
    assert r.color is None and r.drivable is None


@pytest.mark.parametrize("bad, match", [
    (np.zeros((4, 5), np.uint8), "single-channel"),
    (np.zeros((4, 5, 4), np.uint8), "3 channels"),
    (np.zeros((4, 5, 3), np.float32), "uint8"),
    (np.zeros((0, 5, 3), np.uint8), "empty"),
    ("frame.png", "numpy array or torch tensor"),
])
def test_bad_frames_raise_input_error(seg, bad, match):
    with pytest.raises(InputError, match=match):
        seg.predict(bad)


def test_unknown_drivable_class_is_refused_only_when_the_mask_is_wanted(seg):
    with pytest.raises(ValueError, match="sky"):
        seg.predict(frame(), drivable_classes=["sky"])
    assert seg.predict(frame(), drivable_classes=["sky"], outputs={"labels"})[0].drivable is None


@pytest.fixture(scope="module")
def real_frames(kitti_frames):
    return [f for _, f in kitti_frames]


def test_gpu_code_path_on_cpu_tensors_matches_the_cpu_path_and_tracks_the_naive_baseline(
        tiny_checkpoint, real_frames):
    """The torch ops (what runs on CUDA) on CPU tensors against the numpy/OpenCV fast path.

    The two differ only in the bilinear resizes (OpenCV rounds the downscaled frame to uint8,
    see ops): labels agree on >= 99.5 % of pixels, and where they agree colour, mask and overlay
    are the same bytes. And >= 99 % of the naive baseline's labels (which rounds the resized
    frame to uint8 and resizes labels with OpenCV).
    """
    gpu_path = Segmenter.from_checkpoint(tiny_checkpoint, device="cpu", backend="torch", ops_impl="torch")
    cpu_path = Segmenter.from_checkpoint(tiny_checkpoint, device="cpu", backend="torch", ops_impl="numpy")
    naive = NaiveSegmenter(cpu_path.model, cpu_path.meta, cpu_path.inference_size)
    for up in ("labels", "logits"):
        a = gpu_path.predict(real_frames, upsample=up)
        b = cpu_path.predict(real_frames, upsample=up)
        for ra, rb in zip(a, b):
            same = ra.labels == rb.labels
            assert same.mean() >= 0.995, f"{up}: labels agree on {100 * same.mean():.2f} %"
            for k in ("color", "overlay", "drivable"):
                np.testing.assert_array_equal(getattr(ra, k)[same], getattr(rb, k)[same], err_msg=f"{up} {k}")
            conf = np.abs(ra.confidence.astype(int) - rb.confidence)
            assert np.percentile(conf, 99) <= 2, f"{up}: confidence differs by {conf.max()}"
    for f, r in zip(real_frames, b):
        ref = naive(f)
        assert r.labels.shape == ref["labels"].shape == f.shape[:2]
        assert (r.labels == ref["labels"]).mean() >= 0.99
    for f, r in zip(real_frames, cpu_path.predict(real_frames, upsample="labels")):
        ref = naive(f)
        same = r.labels == ref["labels"]
        assert same.mean() >= 0.99
        # where the labels agree, colour and mask agree exactly; overlays within rounding
        np.testing.assert_array_equal(r.color[same], ref["color"][same])
        np.testing.assert_array_equal(r.drivable[same], ref["drivable"][same])
        assert np.abs(r.overlay[same].astype(int) - ref["overlay"][same]).max() <= 1


def test_onnxruntime_backend_matches_torch(tiny_checkpoint, real_frames):
    ort = Segmenter.from_checkpoint(tiny_checkpoint, device="cpu", backend="onnxruntime")
    pt = Segmenter.from_checkpoint(tiny_checkpoint, device="cpu", backend="torch")
    assert ort.backend == "onnxruntime" and pt.backend == "torch"
    for a, b in zip(ort.predict(real_frames[:2], return_probs=True), pt.predict(real_frames[:2], return_probs=True)):
        np.testing.assert_allclose(a.probs, b.probs, atol=1e-4)
        assert (a.labels == b.labels).mean() >= 0.999
    # auto picks ONNX Runtime on CPU in fp32 (and reuses the export of the same file)
    assert Segmenter.from_checkpoint(tiny_checkpoint, device="cpu").backend == "onnxruntime"


def test_reduced_precision_on_cpu_runs_with_torch(tiny_checkpoint):
    s = Segmenter.from_checkpoint(tiny_checkpoint, device="cpu", precision="bf16", inference_size=SMALL)
    assert s.backend == "torch"
    ref = Segmenter.from_checkpoint(tiny_checkpoint, device="cpu", backend="torch", inference_size=SMALL)
    f = frame(64, 192, seed=5)
    assert (s.predict(f)[0].labels == ref.predict(f)[0].labels).mean() >= 0.9
