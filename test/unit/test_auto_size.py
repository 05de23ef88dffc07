"""``inference_size: auto`` in the Segmenter and the engine: each camera at its own aspect.

The tiny checkpoint's input size is 96x320 (30,720 px, 3.33:1).
"""

from __future__ import annotations

import shutil
import time

import numpy as np
import pytest

from pspnet_ros.inference import EngineConfig, RealtimeEngine, Segmenter
from pspnet_ros.inference import segmenter as segmenter_mod
from pspnet_ros.tools.quantize import int8_path


def frame(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_auto_runs_each_aspect_at_its_own_size(tiny_checkpoint, backend):
    seg = Segmenter.from_checkpoint(tiny_checkpoint, device="cpu", backend=backend)
    assert seg.auto_size and seg.inference_size == (96, 320)
    assert seg.size_for((192, 640)) == (96, 320)          # the model's own aspect: its own size
    assert seg.size_for((240, 320)) == (144, 208)         # 4:3 at about 30,720 px
    four_three, kitti = frame(240, 320), frame(192, 640, 1)
    net = seg.predict([four_three, kitti], output_resolution="network")
    assert net[0].labels.shape == (144, 208) and net[1].labels.shape == (96, 320)
    full = seg.predict([four_three, kitti])
    assert full[0].labels.shape == (240, 320) and full[1].labels.shape == (192, 640)
    assert set(seg.sizes()) == {"96x320", "144x208"}
    assert all(v["backend"] == backend for v in seg.sizes().values())
    # the 4:3 frame really ran at 144x208: same labels as a segmenter fixed at that size
    fixed = Segmenter.from_checkpoint(tiny_checkpoint, device="cpu", backend=backend, inference_size="144x208")
    assert not fixed.auto_size and fixed.size_for((240, 320)) == (144, 208)
    np.testing.assert_array_equal(fixed.predict(four_three)[0].labels, full[0].labels)


def test_an_explicit_size_is_honoured_for_every_camera(tiny_checkpoint):
    seg = Segmenter.from_checkpoint(tiny_checkpoint, device="cpu", backend="torch", inference_size=(64, 64))
    for hw in ((240, 320), (192, 640), (720, 1280)):
        assert seg.size_for(hw) == (64, 64)
        assert seg.predict(frame(*hw), output_resolution="network")[0].labels.shape == (64, 64)


def test_sizes_are_bounded_lru(tiny_checkpoint, monkeypatch):
    monkeypatch.setattr(segmenter_mod, "MAX_SIZES", 2)
    monkeypatch.setattr(segmenter_mod, "SIZE_BUILD_WINDOW_S", 0.0)  # no build-rate limit here
    seg = Segmenter.from_checkpoint(tiny_checkpoint, device="cpu", backend="onnxruntime")
    for hw in ((240, 320), (360, 640), (300, 300), (240, 320)):
        seg.predict(frame(*hw))
    assert len(seg.sizes()) == 2
    assert list(seg.sizes())[-1] == "144x208"  # most recently used last


def test_engine_batches_cameras_per_size_and_network_outputs_follow(tiny_checkpoint):
    seg = Segmenter.from_checkpoint(tiny_checkpoint, device="cpu", backend="torch")
    got = {}
    eng = RealtimeEngine(seg, EngineConfig(max_batch=4, output_resolution="network", warmup=False),
                         on_result=lambda r: got.__setitem__(r.source_id, r.labels.shape))
    eng.start()
    try:
        eng.submit(frame(240, 320), stamp=1, source_id="front_4_3")
        eng.submit(frame(192, 640), stamp=2, source_id="kitti_like")
        deadline = time.monotonic() + 30
        while len(got) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        eng.stop()
    assert got == {"front_4_3": (144, 208), "kitti_like": (96, 320)}


def test_int8_file_per_size_is_found_by_its_name(tmp_path, tiny_checkpoint):
    ckpt = tmp_path / "m.pt"
    shutil.copy(tiny_checkpoint, ckpt)
    assert int8_path(ckpt).name == "m.int8.onnx"
    assert int8_path(ckpt, (288, 400)).name == "m.int8.288x400.onnx"
    seg = Segmenter.from_checkpoint(ckpt, device="cpu", precision="auto")
    # no INT8 file for either size: auto keeps fp32 and says for which size and how to fix it
    seg.predict(frame(240, 320))
    notes = {k: v["note"] for k, v in seg.sizes().items()}
    assert "--size 144x208" in notes["144x208"] and "--size 96x320" in notes["96x320"]
    assert {v["precision"] for v in seg.sizes().values()} == {"fp32"}


def test_ever_new_frame_shapes_are_refused_not_compiled_forever(tiny_checkpoint, monkeypatch):
    """A source whose frames keep changing shape costs at most MAX_SIZES builds per window."""
    from pspnet_ros.errors import InputError

    monkeypatch.setattr(segmenter_mod, "MAX_SIZES", 2)
    seg = Segmenter.from_checkpoint(tiny_checkpoint, device="cpu", backend="torch")  # 96x320 built: 1
    seg.predict(frame(240, 320))                                                       # 144x208: 2
    with pytest.raises(InputError, match="new sizes in the last 60 s.*fixed"):
        seg.predict(frame(300, 300))
    seg.predict(frame(480, 640))  # a size already built still runs
    monkeypatch.setattr(segmenter_mod, "SIZE_BUILD_WINDOW_S", 0.0)
    assert seg.predict(frame(300, 300))[0].labels.shape == (300, 300)  # the window has passed
