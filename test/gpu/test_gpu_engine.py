"""The engine on CUDA.

Stream/ring overlap never mixes frames up, reduced precision agrees with fp32, GPU ops equal the CPU
ops, nvJPEG decode, CUDA graphs, OOM handling.
"""

from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest
import torch

from pspnet_ros.inference import EngineConfig, RealtimeEngine, Segmenter, ops

pytestmark = pytest.mark.gpu

ALL = frozenset({"labels", "color", "overlay", "drivable", "confidence"})


@pytest.fixture(scope="module")
def frames(kitti_frames):
    """Real frames at 375x1242, plus flipped copies so every frame differs."""
    base = [cv2.resize(f, (1242, 375)) for _, f in kitti_frames]
    return base + [np.ascontiguousarray(f[:, ::-1]) for f in base] + [np.ascontiguousarray(f[::-1]) for f in base]


@pytest.fixture(scope="module")
def seg(tiny_checkpoint):
    return Segmenter.from_checkpoint(tiny_checkpoint, device="cuda")


def run_engine(seg, frames, **cfg):
    results, errors = [], []
    eng = RealtimeEngine(seg, EngineConfig(drop_policy="queue", **cfg), on_result=results.append,
                         on_error=errors.append)
    with eng:
        for i, f in enumerate(frames):
            eng.submit(f, i, source_id=f"cam{i % 3}")
        assert eng.flush(120)
        stats = eng.stats()
    assert not errors, errors[0].message
    return results, stats


def test_overlapped_pipeline_keeps_every_frame_with_its_own_outputs(seg, frames):
    """Pipeline depth 3 with batches of 2: every output must belong to its own frame.

    Uploads, compute and downloads of different batches overlap on three streams and reuse
    pinned/device ring slots. Every output must belong to its own frame: overlay == blend(input,
    palette[labels]) byte for byte, and labels equal a strictly sequential run (depth 1, batch 1).
    """
    stream = frames * 6  # 54 frames, ring slots reused many times
    fast, stats = run_engine(seg, stream, max_batch=2, pipeline_depth=3, outputs=ALL)
    slow, _ = run_engine(seg, stream, max_batch=1, pipeline_depth=1, outputs=ALL)
    assert [r.stamp for r in fast] == list(range(len(stream)))
    lut = ops.Luts(seg.palette, seg.drivable_ids(["road"]), torch.device("cpu"))
    for r, s, f in zip(fast, slow, stream):
        np.testing.assert_array_equal(r.input, f)
        np.testing.assert_array_equal(r.overlay, ops.blend_np(f, ops.colorize_np(r.labels, lut.color_np), 128))
        np.testing.assert_array_equal(r.drivable, ops.drivable_np(r.labels, lut.drivable_np))
        assert (r.labels == s.labels).mean() >= 0.999
    assert stats["batch_mean"] > 1 and stats["gpu_memory_mb"] > 0
    assert {"upload", "preprocess", "inference", "postprocess", "download"} <= set(stats["stages_ms"])


@pytest.mark.parametrize("precision, min_equal", [("fp16", 0.99), ("bf16", 0.97)])
def test_reduced_precision_agrees_with_fp32(tiny_checkpoint, frames, precision, min_equal):
    ref = Segmenter.from_checkpoint(tiny_checkpoint, device="cuda", precision="fp32")
    low = Segmenter.from_checkpoint(tiny_checkpoint, device="cuda", precision=precision)
    equal = [(a.labels == b.labels).mean() for a, b in zip(ref.predict(frames), low.predict(frames))]
    assert min(equal) >= min_equal, equal


def test_gpu_ops_equal_the_cpu_ops(seg):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, (2, 37, 53), dtype=np.uint8)
    rgb = rng.integers(0, 256, (2, 37, 53, 3), dtype=np.uint8)
    lut = ops.Luts(seg.palette, (1,), torch.device("cuda"))
    lab_t = torch.from_numpy(labels).cuda()
    color = ops.colorize(lab_t, lut.color).cpu().numpy()
    for j in range(2):
        np.testing.assert_array_equal(color[j], ops.colorize_np(labels[j], lut.color_np))
        for w in (0, 77, 128, 256):
            np.testing.assert_array_equal(
                ops.blend(torch.from_numpy(rgb[j]).cuda(), torch.from_numpy(color[j]).cuda(), w).cpu().numpy(),
                ops.blend_np(rgb[j], color[j], w))
        np.testing.assert_array_equal(ops.drivable_mask(lab_t, lut.drivable)[j].cpu().numpy(),
                                      ops.drivable_np(labels[j], lut.drivable_np))
        np.testing.assert_array_equal(ops.resize_nearest(lab_t, (375, 1242))[j].cpu().numpy(),
                                      ops.resize_nearest_np(labels[j], (375, 1242)))


def test_gpu_path_agrees_with_the_cpu_path(tiny_checkpoint, frames):
    gpu = Segmenter.from_checkpoint(tiny_checkpoint, device="cuda")
    cpu = Segmenter.from_checkpoint(tiny_checkpoint, device="cpu", backend="torch")
    for a, b in zip(gpu.predict(frames[:3]), cpu.predict(frames[:3])):
        assert (a.labels == b.labels).mean() >= 0.999


def test_nvjpeg_decode_and_cpu_fallback(seg, frames):
    jpg = [cv2.imencode(".jpg", f[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes() for f in frames[:3]]
    results, errors = [], []
    eng = RealtimeEngine(seg, EngineConfig(drop_policy="queue", outputs=frozenset({"labels", "input"})),
                         on_result=results.append, on_error=errors.append)
    with eng:
        for i, data in enumerate(jpg):
            eng.submit_encoded(data, "jpeg", i)
        eng.submit_encoded(jpg[0][: len(jpg[0]) // 2], "jpeg", 99)  # corrupt: GPU fails, CPU refuses
        assert eng.flush(60)
    assert [r.stamp for r in results] == [0, 1, 2]
    assert [(e.stamp, e.kind) for e in errors] == [(99, "bad_input")]
    for r, f in zip(results, frames):
        assert r.input.shape == f.shape and np.abs(r.input.astype(int) - f).mean() < 4
        ref = seg.predict(r.input)[0]
        assert (r.labels == ref.labels).mean() >= 0.999


def test_cuda_graphs_and_compile_give_the_same_labels(tiny_checkpoint, frames):
    eager = Segmenter.from_checkpoint(tiny_checkpoint, device="cuda", precision="bf16")
    graphs = Segmenter.from_checkpoint(tiny_checkpoint, device="cuda", precision="bf16")
    a, _ = run_engine(eager, frames, max_batch=2)
    b, _ = run_engine(graphs, frames, max_batch=2, cuda_graphs=True)
    # a failed capture is a failure here, not a silent fallback
    assert graphs.runner.graph_capture_error is None, graphs.runner.graph_capture_error
    assert graphs.runner.graph_batch_sizes == (1, 2)
    for ra, rb in zip(a, b):
        assert (ra.labels == rb.labels).mean() >= 0.99
    compiled = Segmenter.from_checkpoint(tiny_checkpoint, device="cuda", precision="bf16")
    c, _ = run_engine(compiled, frames, max_batch=2, compile=True)
    for ra, rc in zip(a, c):
        assert (ra.labels == rc.labels).mean() >= 0.99


def test_cuda_graph_replays_from_two_threads_do_not_mix(tiny_checkpoint, frames):
    """predict() on the caller's thread while the engine replays the same graphs on its worker.

    Every result is its own frame's.
    """
    import threading

    seg = Segmenter.from_checkpoint(tiny_checkpoint, device="cuda", precision="bf16")
    ref = [seg.predict(f)[0].labels for f in frames]
    errors = []

    def hammer():
        for _ in range(20):
            for f, r in zip(frames, ref):
                if (seg.predict(f)[0].labels != r).mean() > 0.01:
                    errors.append("predict got another frame's labels")

    t = threading.Thread(target=hammer)
    t.start()
    got, _ = run_engine(seg, frames * 10, max_batch=1, cuda_graphs=True)
    t.join()
    assert seg.runner.graph_capture_error is None
    assert not errors
    assert len(got) == 10 * len(frames)
    for r in got:
        assert (r.labels == ref[r.stamp % len(frames)]).mean() >= 0.99


def test_oom_clears_the_cache_and_continues(seg, frames, monkeypatch):
    cleared = threading.Event()
    real = torch.cuda.empty_cache
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: (cleared.set(), real()))

    def hook(items):
        if items[0].stamp == 0:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    results, errors = [], []
    eng = RealtimeEngine(seg, EngineConfig(drop_policy="queue", max_batch=1), on_result=results.append,
                         on_error=errors.append, fault_hook=hook)
    with eng:
        for i in range(3):
            eng.submit(frames[i], i)
        assert eng.flush(60)
    assert [e.kind for e in errors] == ["oom"] and cleared.is_set()
    assert [r.stamp for r in results] == [1, 2]
