"""`make demo` in reduced form: sample bag -> segmentation_node process over DDS -> demo_out/."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def test_demo_pipeline_reduced(tmp_path, tiny_checkpoint):
    out = tmp_path / "demo_out"
    # drop_policy queue and 2 Hz: on a loaded CI machine the node may lag, and this test checks
    # that every frame makes the whole trip; the default demo (latest, 5 Hz) reports drops.
    proc = subprocess.run([sys.executable, "-m", "pspnet_ros.tools.demo", "--frames", "3", "--out",
                           str(out), "--checkpoint", str(tiny_checkpoint), "--device", "cpu",
                           "--drop-policy", "queue", "--rate", "2"],
                          cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr + _log(out)
    assert "look at:" in proc.stdout and str(out / "mosaic.png") in proc.stdout

    summary = json.loads((out / "summary.json").read_text())
    start = 1_317_000_000_000_000_000
    stamps = [start + i * 500_000_000 for i in range(3)]  # 2 Hz
    brief = {k: summary[k] for k in ("frames_in", "frames_out", "drops", "partial_missing",
                                     "stamps_out", "node_diagnostics")}
    assert summary["frames_in"] == summary["frames_out"] == 3 and summary["drops"] == 0, \
        json.dumps(brief)
    assert summary["stamps_in"] == summary["stamps_out"] == stamps and summary["exact_stamps"]
    assert set(summary["latency_ms"]) == {"p50", "p95", "p99"}
    assert summary["frame_size"] == [375, 1242] and summary["classes"] == ["not_road", "road"]
    assert summary["node_exit_code"] == 0
    # The node also counts the warm-up frames the demo sends until the pipeline answers.
    assert int(summary["node_diagnostics"]["processed (total)"]) >= 3
    assert summary["warmup_frames"] >= 1

    params = yaml.safe_load((out / "demo_params.yaml").read_text())["/**"]["ros__parameters"]
    assert params["checkpoint"] == str(Path(tiny_checkpoint).resolve())
    assert params["use_sim_time"] is True
    # The sample's KITTI calibration turns on the grid; every frame's grid came back over DDS.
    assert params["bev"]["enable"] is True and len(params["bev"]["camera_to_ground"]) == 16
    assert "drivable_grid" in summary["outputs"]
    assert summary["bev"]["grid"] == {"frame_id": "base_footprint", "resolution": 0.05, "width": 800,
                                      "height": 400}

    import av

    with av.open(str(out / "overlay.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    assert len(frames) == 3 and frames[0].shape == (376, 1242, 3)  # even height for yuv420p

    from PIL import Image

    mosaic = np.asarray(Image.open(out / "mosaic.png").convert("RGB"))
    # input | color | overlay | drivable (480 wide) | bev (the 800x400 grid, as high: 290 wide)
    assert mosaic.shape[1] == 4 * 480 + 290 + 4 * 4
    assert mosaic.shape[0] > 3 * 140


def test_demo_without_a_shipped_model_says_what_to_do(monkeypatch):
    from pspnet_ros import paths
    from pspnet_ros.tools import demo

    def no_models():
        raise paths.ModelNotFoundError("no shipped models found")

    monkeypatch.setattr(paths, "models_dir", no_models)
    with pytest.raises(SystemExit) as exc:
        demo.resolve_model("auto", "cpu")
    assert "--checkpoint" in str(exc.value) and "no shipped KITTI road model" in str(exc.value)


def _log(out: Path) -> str:
    log = out / "node.log"
    return "\nnode.log:\n" + log.read_text(errors="replace") if log.is_file() else ""
