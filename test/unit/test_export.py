"""``pspnet export --format onnx`` and the exportable adaptive pooling."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pspnet_ros.tools import export
from pspnet_ros.inference.runners import FixedAdaptiveAvgPool2d

import onnx  # dev extra: always installed by make setup


@pytest.mark.parametrize("in_size, out_size", [((12, 39), (6, 6)), ((12, 39), (2, 2)), ((7, 5), (3, 3)),
                                               ((4, 4), (6, 6)), ((9, 13), (1, 1))])
def test_fixed_adaptive_pool_equals_adaptive_avg_pool(in_size, out_size):
    x = torch.randn(2, 3, *in_size)
    torch.testing.assert_close(FixedAdaptiveAvgPool2d(out_size, in_size)(x), F.adaptive_avg_pool2d(x, out_size))


def test_export_writes_onnx_with_metadata_and_passes_the_parity_check(tmp_path, tiny_checkpoint, capsys):
    import onnxruntime as ort
    out = tmp_path / "m.onnx"
    rc = export.main(["--checkpoint", str(tiny_checkpoint), "--size", "32x96", "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "onnxruntime parity" in text and "labels equal" in text
    model = onnx.load(str(out))
    meta = json.loads({p.key: p.value for p in model.metadata_props}["pspnet_meta"])
    assert meta["classes"] == ["not_road", "road"] and meta["input_size"] == [32, 96]
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (logits,) = sess.run(None, {"input": np.zeros((2, 3, 32, 96), np.float32)})
    assert logits.shape == (2, 2, 32, 96)


def test_export_reports_a_missing_checkpoint(tmp_path, capsys):
    rc = export.main(["--checkpoint", str(tmp_path / "nope.pt")])
    assert rc == 2 and "does not exist" in capsys.readouterr().err


def test_lite_skip_model_exports_and_serves_without_special_cases(tmp_path, capsys, kitti_frames):
    """EfficientNet-Lite + skip decoder, its own normalization in the metadata: export and serve.

    ONNX export passes the parity check and the ONNX Runtime segmenter matches the torch one.
    """
    from pspnet_test_helpers import make_tiny_checkpoint

    from pspnet_ros.inference.segmenter import Segmenter

    ckpt = make_tiny_checkpoint(tmp_path / "lite.pt", backbone="efficientnet_lite0")
    out = tmp_path / "lite.onnx"
    rc = export.main(["--checkpoint", str(ckpt), "--size", "64x192", "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0 and "labels equal" in text, text
    meta = json.loads({p.key: p.value for p in onnx.load(str(out)).metadata_props}["pspnet_meta"])
    assert meta["mean"] == [127 / 255] * 3 and meta["std"] == [128 / 255] * 3
    ort = Segmenter.from_checkpoint(ckpt, device="cpu", backend="onnxruntime", inference_size=(64, 192))
    pt = Segmenter.from_checkpoint(ckpt, device="cpu", backend="torch", inference_size=(64, 192))
    frames = [f for _, f in kitti_frames[:2]]
    assert ort.backend == "onnxruntime" and pt.backend == "torch"
    for a, b in zip(ort.predict(frames, return_probs=True), pt.predict(frames, return_probs=True)):
        np.testing.assert_allclose(a.probs, b.probs, atol=1e-4)
