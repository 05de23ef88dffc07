"""``pspnet bench`` runs end to end on tiny inputs and writes the documented JSON.

No timing assertions: the figures themselves come from real runs, recorded in the README.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from pspnet_ros.tools import bench
from pspnet_ros.tools.media import write_png

KEYS = {"device", "model", "input_size", "engine_fps", "naive_fps", "ratio", "latency_ms", "stages_ms"}


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "frames"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        write_png(d / f"{i}.png", rng.integers(0, 256, (50, 120, 3), dtype=np.uint8))
    return d


def test_bench_checkpoint_against_naive_writes_json(tmp_path, tiny_checkpoint, folder, capsys):
    out = tmp_path / "bench.json"
    rc = bench.main(["--checkpoint", str(tiny_checkpoint), "--device", "cpu", "--size", "32x96",
                     "--frames", "4", "--latency-frames", "2", "--input", str(folder),
                     "--frame-size", "40x100", "--backend", "torch", "--threads", "1", "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "naive (eager fp32" in text and "ratio engine/naive" in text
    res = json.loads(out.read_text())
    assert KEYS <= set(res)
    assert res["device"] == "cpu" and res["input_size"] == [32, 96] and res["frame_size"] == [40, 100]
    assert res["engine_fps"] > 0 and res["naive_fps"] > 0
    assert res["ratio"] == pytest.approx(res["engine_fps"] / res["naive_fps"], rel=0.01)
    assert set(res["latency_ms"]) == {"p50", "p95", "p99"}
    assert {"preprocess", "inference", "postprocess"} <= set(res["stages_ms"])
    assert res["command"].startswith("pspnet bench --checkpoint")


def test_bench_untrained_architecture(tmp_path, folder):
    out = tmp_path / "b.json"
    rc = bench.main(["--arch", "mobilenetv3_large", "--size", "32x96", "--device", "cpu", "--frames", "2",
                     "--latency-frames", "1", "--input", str(folder), "--skip-naive", "--backend", "torch",
                     "--json", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["model"] == "pspnet_mobilenetv3_large_untrained" and res["ratio"] is None


def test_bench_without_a_shipped_model_says_what_to_do(tmp_path, monkeypatch, capsys):
    (tmp_path / "registry.json").write_text("{}")
    monkeypatch.setenv("PSPNET_MODELS_DIR", str(tmp_path))
    assert bench.main(["--device", "cpu"]) == 2
    assert "--arch mobilenetv3_large" in capsys.readouterr().err


def test_bench_compare_measures_each_backend_and_precision_in_one_run(tmp_path, tiny_checkpoint, folder, capsys):
    """--compare: one row per (backend, precision) that can be built, the auto choice first.

    The tiny checkpoint has no INT8 model: the int8 rows are named as not measured, with why.
    """
    out = tmp_path / "cmp.json"
    rc = bench.main(["--checkpoint", str(tiny_checkpoint), "--device", "cpu", "--size", "32x96", "--compare",
                     "--frames", "2", "--naive-frames", "2", "--latency-frames", "1", "--rounds", "1",
                     "--input", str(folder), "--threads", "1", "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    res = json.loads(out.read_text())
    rows = [(r["backend"], r["precision"]) for r in res["table"]]
    assert rows[0] == ("onnxruntime", "fp32")  # auto on CPU without an INT8 model: fp32, ONNX Runtime
    assert set(rows) == {("onnxruntime", "fp32"), ("openvino", "fp32"), ("torch", "fp32")}
    assert (res["backend"], res["precision"]) == rows[0] and res["engine_fps"] == res["table"][0]["engine_fps"]
    for r in res["table"]:
        assert r["engine_fps"] > 0 and r["ratio"] == pytest.approx(r["engine_fps"] / res["naive_fps"], rel=0.01)
        assert f"engine {r['backend']} {r['precision']}" in text
    assert len(res["not_measured"]) == 2 and all("no INT8 model" in w for w in res["not_measured"])
    assert "not measured: onnxruntime int8" in text


def test_bench_auto_size_per_frame_size_table(tmp_path, tiny_checkpoint, folder, capsys):
    """One run over several camera shapes: each at its aspect-true size, each with its naive ratio."""
    out = tmp_path / "multi.json"
    rc = bench.main(["--checkpoint", str(tiny_checkpoint), "--device", "cpu", "--frames", "2",
                     "--naive-frames", "1", "--latency-frames", "1", "--rounds", "1", "--input", str(folder),
                     "--frame-size", "96x320,240x320", "--backend", "torch", "--threads", "1",
                     "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "summary (engine fps, x naive of the same frame size" in text
    res = json.loads(out.read_text())
    by = {tuple(r["frame_size"]): r for r in res["by_frame_size"]}
    assert by[(96, 320)]["input_size"] == [96, 320] and by[(240, 320)]["input_size"] == [144, 208]
    for r in by.values():
        assert r["inference_size"] == "auto" and r["naive_fps"] > 0
        assert r["table"][0]["ratio"] == pytest.approx(r["table"][0]["engine_fps"] / r["naive_fps"], rel=0.01)
