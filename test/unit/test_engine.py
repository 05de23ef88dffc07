"""RealtimeEngine behaviour: slots and queue, batching, errors, stats, lifecycle.

On CPU, with the CUDA pipeline code path exercised through no-op streams (``use_ring=True``).
"""

from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest
import torch

from pspnet_ros.inference import EngineConfig, FrameError, RealtimeEngine, Segmenter

SMALL = (32, 96)


@pytest.fixture(scope="module")
def seg(tiny_checkpoint):
    return Segmenter.from_checkpoint(tiny_checkpoint, device="cpu", backend="torch", inference_size=SMALL)


@pytest.fixture(scope="module")
def seg_torch_ops(tiny_checkpoint):
    """Return the ops exactly as they run on CUDA (torch), here on CPU tensors."""
    return Segmenter.from_checkpoint(tiny_checkpoint, device="cpu", backend="torch",
                                     inference_size=SMALL, ops_impl="torch")


def frame(h=40, w=100, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


class Gate:
    """A fault hook that holds the worker inside the batch whose first stamp is ``hold``."""

    def __init__(self, hold=0):
        self.hold = hold
        self.entered = threading.Event()
        self.release = threading.Event()
        self.batches = []

    def __call__(self, items):
        self.batches.append([it.stamp for it in items])
        if items[0].stamp == self.hold:
            self.entered.set()
            assert self.release.wait(10), "test never released the worker"


def make(seg, gate=None, **cfg):
    results, errors = [], []
    eng = RealtimeEngine(seg, EngineConfig(**cfg), on_result=results.append,
                         on_error=errors.append, fault_hook=gate)
    return eng, results, errors


def test_latest_slot_newest_frame_wins_and_replaced_frames_count_as_dropped(seg):
    gate = Gate(hold=0)
    eng, results, _ = make(seg, gate)
    with eng:
        assert eng.submit(frame(), 0)
        assert gate.entered.wait(5)
        for stamp in (1, 2, 3, 4):  # the worker is busy: each replaces the pending one
            assert eng.submit(frame(seed=stamp), stamp)  # and never blocks
        gate.release.set()
        assert eng.flush(10)
        stats = eng.stats()
    assert [r.stamp for r in results] == [0, 4]
    assert (stats["submitted"], stats["processed"], stats["dropped"], stats["failed"]) == (5, 2, 3, 0)
    assert stats["per_source"]["default"]["dropped"] == 3


def test_concurrent_submit_from_many_threads_keeps_the_books_balanced(seg):
    eng, results, errors = make(seg)
    n_threads, n_frames = 4, 40
    f = frame()

    def producer(t):
        for i in range(n_frames):
            eng.submit(f, (t, i), source_id=f"cam{t % 2}")

    with eng:
        threads = [threading.Thread(target=producer, args=(t,)) for t in range(n_threads)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(30)
        assert eng.flush(30)
        stats = eng.stats()
    assert not errors
    assert stats["submitted"] == n_threads * n_frames
    assert stats["processed"] + stats["dropped"] + stats["failed"] == stats["submitted"]
    assert stats["processed"] == len(results) >= 2
    for sid in ("cam0", "cam1"):
        s = stats["per_source"][sid]
        assert s["submitted"] == 2 * n_frames
        assert s["processed"] + s["dropped"] == s["submitted"]
        # each producer's frames of one source come out in the order they went in
        for t in range(n_threads):
            seq = [r.stamp[1] for r in results if r.source_id == sid and r.stamp[0] == t]
            assert seq == sorted(seq)


def test_queue_policy_drops_nothing_keeps_order_and_applies_back_pressure(seg):
    gate = Gate(hold=0)
    eng, results, _ = make(seg, gate, drop_policy="queue", queue_size=2, max_batch=1)
    with eng:
        eng.submit(frame(), 0)
        assert gate.entered.wait(5)
        eng.submit(frame(), 1)
        eng.submit(frame(), 2)  # the queue is now full
        blocked = threading.Thread(target=eng.submit, args=(frame(), 3))
        blocked.start()
        blocked.join(0.3)
        assert blocked.is_alive(), "submit should block while the queue is full"
        gate.release.set()
        blocked.join(5)
        assert not blocked.is_alive()
        assert eng.flush(10)
        stats = eng.stats()
    assert [r.stamp for r in results] == [0, 1, 2, 3]
    assert stats["dropped"] == 0 and stats["processed"] == 4


def test_results_keep_stamp_source_and_context_untouched(seg):
    eng, results, _ = make(seg, drop_policy="queue")
    contexts = [object() for _ in range(4)]
    with eng:
        for i, ctx in enumerate(contexts):
            eng.submit(frame(seed=i), {"sec": i}, source_id=f"cam{i % 2}", context=ctx)
        assert eng.flush(10)
    assert [r.stamp for r in results] == [{"sec": i} for i in range(4)]
    assert [r.source_id for r in results] == ["cam0", "cam1", "cam0", "cam1"]
    assert all(r.context is ctx for r, ctx in zip(results, contexts))
    for i, r in enumerate(results):
        assert r.labels.shape == (40, 100) and r.color.shape == r.overlay.shape == (40, 100, 3)
        assert r.drivable.shape == (40, 100) and r.confidence is None
        assert r.latency_ms > 0 and {"queue", "preprocess", "inference", "postprocess"} <= set(r.timings)
        np.testing.assert_array_equal(r.input, frame(seed=i))


def test_stop_joins_promptly_and_discards_pending_frames_as_dropped(seg):
    gate = Gate(hold=0)
    eng, results, _ = make(seg, gate, drop_policy="queue")
    eng.start()
    eng.submit(frame(), 0)
    assert gate.entered.wait(5)
    eng.submit(frame(), 1)
    eng.submit(frame(), 2)
    threading.Timer(0.2, gate.release.set).start()
    assert eng.stop(timeout=5.0)
    assert not eng.running
    stats = eng.stats()
    assert [r.stamp for r in results] == [0]  # the batch in flight finishes
    assert stats["dropped"] == 2
    assert eng.submit(frame(), 3) is False  # stopped: refused and counted
    assert eng.stats()["dropped"] == 3
    idle, _, _ = make(seg)
    idle.start()
    assert idle.stop(timeout=2.0)


def test_submit_before_start_is_refused(seg):
    eng, _, _ = make(seg)
    assert eng.submit(frame(), 0) is False
    assert eng.stats()["dropped"] == 1


def test_failing_frames_do_not_kill_the_worker(seg):
    def hook(items):
        if any(it.stamp == 1 for it in items):
            raise ValueError("boom")

    calls = []

    def on_result(r):
        calls.append(r.stamp)
        if r.stamp == 3:
            raise RuntimeError("callback bug")

    errors = []
    eng = RealtimeEngine(seg, EngineConfig(drop_policy="queue", max_batch=1), on_result=on_result,
                         on_error=errors.append, fault_hook=hook)
    with eng:
        eng.submit(frame(), 0)
        eng.submit(frame(), 1)  # raises in the batch
        eng.submit(np.zeros((4, 4), np.uint8), 2)  # bad frame
        eng.submit(frame(), 3)  # its callback raises
        eng.submit(frame(), 4)
        assert eng.flush(10)
        stats = eng.stats()
    assert calls == [0, 3, 4]
    assert [(e.stamp, e.kind) for e in errors] == [(1, "failed"), (2, "bad_input")]
    assert isinstance(errors[0], FrameError) and "boom" in errors[0].message
    assert "single-channel" in str(errors[1].error)
    assert stats["failed"] == 2 and stats["processed"] == 3 and stats["callback_errors"] == 1
    assert stats["errors"] == {"bad_input": 1, "oom": 0, "device_lost": 0, "failed": 1}


@pytest.mark.parametrize("exc, kind", [
    (RuntimeError("CUDA error: an illegal memory access was encountered"), "device_lost"),
    (RuntimeError("CUDA error: device-side assert triggered"), "device_lost"),
    (RuntimeError("illegal memory access in my own code"), "failed"),  # not CUDA: not sticky
    (torch.cuda.OutOfMemoryError("CUDA out of memory"), "oom"),
    (ValueError("boom"), "failed"),
])
def test_classify_error_names_sticky_cuda_errors_device_lost(exc, kind):
    """One classification for the engine and the node (which ends itself on device_lost)."""
    from pspnet_ros.inference.engine import classify_error

    assert classify_error(exc) == kind


def test_out_of_memory_is_reported_as_oom_and_the_engine_continues(seg):
    def hook(items):
        if items[0].stamp == 0:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    eng, results, errors = make(seg, hook, drop_policy="queue", max_batch=1)
    with eng:
        for i in range(3):
            eng.submit(frame(), i)
        assert eng.flush(10)
        stats = eng.stats()
    assert [(e.stamp, e.kind) for e in errors] == [(0, "oom")]
    assert [r.stamp for r in results] == [1, 2]
    assert stats["errors"]["oom"] == 1


def test_encoded_frames_are_checked_decoded_and_segmented(seg):
    rgb = frame(48, 80, seed=7)
    png = cv2.imencode(".png", rgb[..., ::-1])[1].tobytes()
    jpg = cv2.imencode(".jpg", rgb[..., ::-1])[1].tobytes()
    bomb = png[:16] + (100_000).to_bytes(4, "big") * 2 + png[24:]
    eng, results, errors = make(seg, drop_policy="queue", outputs=frozenset({"labels", "color", "input"}))
    with eng:
        eng.submit_encoded(png, "png", 0)
        eng.submit_encoded(jpg, "jpeg", 1)
        eng.submit_encoded(jpg[: len(jpg) // 2], "jpeg", 2)
        eng.submit_encoded(bomb, "png", 3)
        eng.submit_encoded(b"\x00" * 10, None, 4)
        eng.submit(rgb, 5)
        assert eng.flush(10)
    by = {r.stamp: r for r in results}
    assert sorted(by) == [0, 1, 5]
    np.testing.assert_array_equal(by[0].labels, by[5].labels)  # PNG is lossless
    np.testing.assert_array_equal(by[0].input, rgb)
    assert by[1].labels.shape == (48, 80) and by[1].color.shape == (48, 80, 3)
    kinds = {e.stamp: (e.kind, str(e.error)) for e in errors}
    assert set(kinds) == {2, 3, 4} and all(k == "bad_input" for k, _ in kinds.values())
    assert "corrupt JPEG data" in kinds[2][1]
    assert "decompression bomb" in kinds[3][1]
    assert "neither JPEG nor PNG" in kinds[4][1]


def test_frames_of_several_sources_share_one_forward_pass(seg):
    gate = Gate(hold="first")
    eng, results, errors = make(seg, gate, max_batch=4)
    frames = {f"cam{i}": frame(seed=i) for i in range(3)}
    with eng:
        eng.submit(frame(), "first", source_id="cam0")
        assert gate.entered.wait(5)
        for sid, f in frames.items():
            eng.submit(f, sid, source_id=sid)
        eng.submit(frame(60, 70, seed=9), "odd", source_id="cam3")  # other size: own forward
        gate.release.set()
        assert eng.flush(10)
        stats = eng.stats()
    assert not errors
    assert gate.batches == [["first"], ["cam0", "cam1", "cam2"], ["odd"]]
    for r in results:
        if r.source_id in frames and r.stamp != "first":
            np.testing.assert_array_equal(r.labels, seg.predict(frames[r.source_id])[0].labels)
    assert stats["batch_mean"] == pytest.approx((1 + 3 + 1) / 3, abs=0.01)
    assert set(stats["per_source"]) == {"cam0", "cam1", "cam2", "cam3"}


def test_stats_snapshot_has_counters_latency_and_stages(seg):
    eng, _, _ = make(seg, drop_policy="queue")
    with eng:
        for i in range(3):
            eng.submit(frame(), i, source_id="front")
        assert eng.flush(10)
        s = eng.stats()
    assert (s["processed"], s["dropped"], s["failed"], s["pending"]) == (3, 0, 0, 0)
    assert set(s["latency_ms"]) == {"p50", "p95", "p99"} and s["latency_ms"]["p50"] > 0
    assert {"upload", "preprocess", "inference", "postprocess"} <= set(s["stages_ms"])
    assert s["per_source"]["front"]["processed"] == 3
    assert s["device"] == "cpu" and s["gpu_memory_mb"] is None and s["backend"] == "torch"


def test_update_changes_outputs_and_alpha_at_runtime(seg):
    eng, results, _ = make(seg, drop_policy="queue")
    f = frame()
    with eng:
        eng.submit(f, 0)
        eng.flush(10)
        eng.update(overlay_alpha=1.0)
        eng.submit(f, 1)
        eng.flush(10)
        eng.update(outputs={"labels", "confidence"})
        eng.submit(f, 2)
        eng.submit(f, 3, outputs={"drivable"})  # per-frame override
        eng.flush(10)
        with pytest.raises(ValueError, match="max_batch"):
            eng.update(max_batch=2)
        with pytest.raises(ValueError, match="overlay_alpha"):
            eng.update(overlay_alpha=2.0)
        with pytest.raises(ValueError, match="sky"):
            eng.update(drivable_classes=("sky",), outputs={"drivable"})
    assert not np.array_equal(results[0].overlay, results[0].color)
    np.testing.assert_array_equal(results[1].overlay, results[1].color)
    assert results[2].color is None and results[2].confidence is not None
    assert results[3].drivable is not None and results[3].confidence is None


def test_network_output_resolution(seg):
    eng, results, _ = make(seg, drop_policy="queue", output_resolution="network")
    with eng:
        eng.submit(frame(), 0)
        eng.flush(10)
    assert results[0].labels.shape == SMALL and results[0].overlay.shape == SMALL + (3,)


def test_gpu_pipeline_code_path_on_cpu_tensors_matches_predict(seg_torch_ops):
    """The CUDA path run with CPU no-op streams gives exactly what synchronous predict gives (same ops).

    The CUDA path: pinned ring, three streams, events, pipeline depth 2, torch ops.
    """
    frames = [frame(40, 100, 1), frame(40, 100, 2), frame(50, 64, 3), frame(40, 100, 4)]
    results, errors = [], []
    eng = RealtimeEngine(seg_torch_ops, EngineConfig(drop_policy="queue", max_batch=2, pipeline_depth=2,
                                                     outputs=frozenset({"labels", "color", "overlay",
                                                                        "drivable", "confidence"})),
                         on_result=results.append, on_error=errors.append, use_ring=True)
    with eng:
        for i, f in enumerate(frames):
            bgr = i == 1
            eng.submit(np.ascontiguousarray(f[..., ::-1]) if bgr else f, i, bgr=bgr)
        eng.submit_encoded(cv2.imencode(".png", frames[0][..., ::-1])[1].tobytes(), "png", 4)
        for i, f in enumerate(frames[:2]):  # ring slots are reused: earlier results must survive
            eng.submit(f, 5 + i)
        assert eng.flush(10)
        stats = eng.stats()
    assert not errors
    assert [r.stamp for r in results] == list(range(7))
    expected = seg_torch_ops.predict(frames + frames[:1] + frames[:2], outputs={"labels", "color", "overlay",
                                                                      "drivable", "confidence"})
    for r, e in zip(results, expected):
        for k in ("labels", "color", "overlay", "drivable", "confidence"):
            np.testing.assert_array_equal(getattr(r, k), getattr(e, k), err_msg=f"frame {r.stamp} {k}")
        np.testing.assert_array_equal(r.input, e.input)
    assert {"pin", "upload", "download"} <= set(stats["stages_ms"])


@pytest.mark.parametrize("bad, match", [
    ({"drop_policy": "oldest"}, "drop_policy"),
    ({"queue_size": 0}, "queue_size"),
    ({"overlay_alpha": -0.1}, "overlay_alpha"),
    ({"outputs": {"labels", "depth"}}, "unknown output.*depth"),
    ({"upsample": "bicubic"}, "upsample"),
    ({"max_batch": 1.5}, "max_batch"),
    ({"compile": "yes"}, "compile"),
])
def test_config_validation_names_the_setting(bad, match):
    with pytest.raises(ValueError, match=match):
        EngineConfig(**bad)


def test_config_from_dict():
    cfg = EngineConfig.from_dict({"drop_policy": "queue", "outputs": "color,overlay",
                                  "drivable_classes": "road, sidewalk", "max_batch": None})
    assert cfg.outputs == frozenset({"labels", "color", "overlay"})
    assert cfg.drivable_classes == ("road", "sidewalk") and cfg.max_batch == 4
    with pytest.raises(ValueError, match="unknown engine setting.*bogus"):
        EngineConfig.from_dict({"bogus": 1})


@pytest.mark.parametrize("sizes", [
    [(40, 100), (50, 64), (36, 80), (40, 100)],   # A B C A: one size twice, not consecutive
    [(40, 100), (50, 64), (36, 80), (44, 72)],    # A B C D: four groups, the ring has three slots
], ids=["ABCA", "ABCD"])
def test_ring_mixed_sizes_in_one_take_keep_every_result_with_its_own_frame(seg_torch_ops, seg, sizes):
    """Several cameras of different sizes in one take: every result stays with its own frame.

    The first batch is held so the next take holds all four: every result equals
    ``Segmenter.predict`` of its own frame and carries its own stamp and source, however many size
    groups the take splits into.
    """
    gate = Gate(hold="hold")
    results, errors = [], []
    outs = frozenset({"labels", "color", "overlay", "drivable"})
    eng = RealtimeEngine(seg_torch_ops, EngineConfig(drop_policy="queue", max_batch=4, pipeline_depth=2,
                                                     outputs=outs),
                         on_result=results.append, on_error=errors.append, fault_hook=gate, use_ring=True)
    frames = [frame(h, w, seed=10 + i) for i, (h, w) in enumerate(sizes)]
    with eng:
        eng.submit(frame(40, 100, seed=99), "hold", source_id="cam_hold")
        assert gate.entered.wait(10)
        for i, f in enumerate(frames):
            eng.submit(f, i, source_id=f"cam{i}")
        gate.release.set()
        assert eng.flush(20)
    assert not errors
    got = {r.stamp: r for r in results if r.stamp != "hold"}
    assert sorted(got) == list(range(len(frames)))
    expected = seg.predict(frames, outputs=outs)
    for i, e in enumerate(expected):
        r = got[i]
        assert r.source_id == f"cam{i}" and r.labels.shape == sizes[i]
        for k in ("labels", "color", "overlay", "drivable"):
            np.testing.assert_array_equal(getattr(r, k), getattr(e, k), err_msg=f"frame {i} {k}")
    # frames of one size batch together even when they were not consecutive
    take = [b for b in gate.batches if "hold" not in b]
    if sizes[0] == sizes[3]:
        assert sorted(map(len, take)) == [1, 1, 2] and [0, 3] in take


def test_size_grouping_keeps_each_sources_order(seg):
    """A camera that changes size mid-take (A, B, A from one source) is not reordered.

    Meanwhile another camera's same-size frame still joins the first group.
    """
    gate = Gate(hold="hold")
    eng, results, errors = make(seg, gate, drop_policy="queue", max_batch=4)
    with eng:
        eng.submit(frame(), "hold", source_id="x")
        assert gate.entered.wait(10)
        eng.submit(frame(40, 100, 1), 0, source_id="a")
        eng.submit(frame(50, 64, 2), 1, source_id="a")
        eng.submit(frame(40, 100, 3), 2, source_id="b")
        eng.submit(frame(40, 100, 4), 3, source_id="a")
        gate.release.set()
        assert eng.flush(20)
    assert not errors
    assert [r.stamp for r in results if r.source_id == "a"] == [0, 1, 3]
    assert [0, 2] in gate.batches and [3] in gate.batches


def test_warmup_runs_the_whole_pipeline_without_delivering_anything(seg_torch_ops):
    gate = Gate(hold="never")
    results, errors = [], []
    eng = RealtimeEngine(seg_torch_ops, EngineConfig(drop_policy="queue", max_batch=2, pipeline_depth=2,
                                                     warmup=True),
                         on_result=results.append, on_error=errors.append, fault_hook=gate, use_ring=True)
    with eng:
        # every ring slot holds its pinned input and output buffers before the first frame
        assert len(eng._pipe.ring) == 3 and all(slot._host and slot._device for slot in eng._pipe.ring)
        stats = eng.stats()
        assert stats["submitted"] == stats["processed"] == stats["failed"] == 0
        eng.submit(frame(), 0)
        assert eng.flush(10)
    assert [r.stamp for r in results] == [0] and not errors
    assert gate.batches == [[0]]  # the fault hook never saw the warm-up


def test_queue_submit_without_blocking_refuses_when_full(seg):
    """block=False (the node's executor): a full queue refuses at once, counted as dropped.

    Every accepted frame is still processed in order.
    """
    import time

    gate = Gate(hold=0)
    eng, results, _ = make(seg, gate, drop_policy="queue", queue_size=2)
    with eng:
        assert eng.submit(frame(), 0)
        assert gate.entered.wait(10)
        assert eng.submit(frame(), 1, block=False) and eng.submit(frame(), 2, block=False)
        t0 = time.monotonic()
        assert eng.submit(frame(), 3, block=False) is False
        assert time.monotonic() - t0 < 0.5
        gate.release.set()
        assert eng.flush(10)
        stats = eng.stats()
    assert [r.stamp for r in results] == [0, 1, 2]
    assert stats["dropped"] == 1
