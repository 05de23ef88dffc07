"""``precision: auto`` with ``backend: torch`` serves in fp32 (issue 22, 3a).

The shipped checkpoints have an accuracy-checked INT8 model next to them, so ``auto`` would pick
INT8 on CPU; PyTorch has no INT8 path here, so with ``backend: torch`` ``auto`` must mean fp32
instead of refusing to start. An explicit ``precision: int8`` with ``backend: torch`` still refuses.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pspnet_ros.inference import Segmenter
from pspnet_ros.inference import int8 as q
from pspnet_ros.paths import shipped_model

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "data" / "sample" / "kitti_road"


@pytest.fixture(scope="module")
def kitti_ckpt():
    ckpt = shipped_model("kitti_road", "cpu")
    assert q.int8_path(ckpt).is_file()  # the case of the defect: an INT8 model exists
    return ckpt


def test_segmenter_auto_precision_on_torch_backend_is_fp32(kitti_ckpt):
    seg = Segmenter.from_checkpoint(kitti_ckpt, device="cpu", precision="auto", backend="torch")
    assert seg.backend == "torch" and seg.precision == "fp32" and seg.int8_record is None
    assert "backend torch" in seg.precision_note
    frame = np.random.default_rng(0).integers(0, 256, (60, 200, 3), dtype=np.uint8)
    (res,) = seg.predict(frame, outputs=("labels",))
    assert res.labels.shape == (60, 200)
    with pytest.raises(ValueError, match="int8 needs backend onnxruntime or openvino"):
        Segmenter.from_checkpoint(kitti_ckpt, device="cpu", precision="int8", backend="torch")


def test_pspnet_infer_with_backend_torch_serves(tmp_path):
    from pspnet_ros.tools import infer as infer_cli
    from pspnet_ros.tools.media import read_image

    image = SAMPLE / "um_000004.jpg"
    out = tmp_path / "out"
    rc = infer_cli.main([str(image), "--out", str(out), "--checkpoint", "auto", "--device", "cpu",
                         "--backend", "torch", "--outputs", "labels", "--no-progress", "--threads", "1"])
    assert rc == 0
    labels = read_image(out / "um_000004_labels.png")
    assert labels.shape[:2] == read_image(image).shape[:2]


def test_pspnet_bag_with_backend_torch_serves(tmp_path):
    from pspnet_ros.tools.bags import make_bag, process

    src = tmp_path / "frames"
    src.mkdir()
    for name in ("um_000004.jpg", "um_000013.jpg"):
        (src / name).write_bytes((SAMPLE / name).read_bytes())
    bag = tmp_path / "in_bag"
    assert make_bag.main([str(src), "--out", str(bag), "--start-time", "1700000000", "--no-progress"]) == 0
    summary = process.process_bag(bag, tmp_path / "out_bag", checkpoint="auto", device="cpu", backend="torch",
                                  progress=False)
    assert summary.frames_written == summary.frames_total == 2 and not summary.failures
