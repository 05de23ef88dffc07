"""Diagnostics levels and counters (pure functions of the per-camera statistics)."""

from __future__ import annotations

import pytest

import rclpy  # noqa: F401  (the ROS layer must run: a missing rclpy is an error, not a skip)

from pspnet_ros.ros import diagnostics as D  # noqa: E402


def window(**delta):
    counts = dict.fromkeys(D.COUNTERS, 0)
    counts.update(delta)
    return D.Window(period_s=1.0, delta=counts, total=dict(counts), dropped=delta.get("dropped", 0),
                    dropped_total=0, latency_p50_ms=10.0, latency_p95_ms=20.0, last_error="boom")


@pytest.mark.parametrize("delta,paused,level,fragment", [
    ({"received": 10, "processed": 10}, False, D.OK, "ok"),
    ({"received": 0}, False, D.WARN, "no frames on /image"),
    ({"received": 10, "processed": 0, "failed": 10}, False, D.ERROR, "all frames failed"),
    ({"received": 10, "processed": 0, "bad_input": 10}, False, D.ERROR, "unusable"),
    ({"received": 10, "processed": 8, "failed": 2}, False, D.WARN, "2 frames failed"),
    ({"received": 30, "processed": 5, "dropped": 25}, False, D.WARN, "below half the input rate"),
    ({"received": 30, "processed": 3, "rate_limited": 27}, False, D.OK, "ok"),  # max_rate is not a collapse
    ({"received": 10, "no_subscribers": 10}, False, D.OK, "idle"),
    ({"received": 10, "paused": 10}, True, D.OK, "paused"),
])
def test_levels(delta, paused, level, fragment):
    got_level, message = D.assess(window(**delta), paused, "/image")
    assert got_level == level and fragment in message


def test_window_reports_deltas_and_latency_percentiles():
    stats = D.CameraStats()
    stats.count("received", 5)
    for ms in (10.0, 20.0, 30.0, 40.0):
        stats.add_latency(ms)
    w = stats.window(dropped_total=3)
    assert w.delta["received"] == 5 and w.dropped == 3 and w.latency_p50_ms == 25.0
    stats.count("received", 2)
    w = stats.window(dropped_total=4)
    assert w.delta["received"] == 2 and w.total["received"] == 7 and w.dropped == 1
    assert w.latency_p50_ms is None  # no frames came out in this window


def test_status_carries_the_documented_keys():
    status = D.build_status("/segmentation_node", "m@cpu", window(received=10, processed=10), False,
                            "/image", {"device": "cpu", "gpu_memory_mb": None, "stages_ms": {"forward": 12.5}},
                            "m", (188, 621))
    keys = {kv.key for kv in status.values}
    for key in ("input rate (Hz)", "output rate (Hz)", "dropped (total)", "failed (total)",
                "latency p50 (ms)", "latency p95 (ms)", "stage forward (ms)", "device", "gpu memory (MB)",
                "model", "inference size"):
        assert key in keys


def test_a_missing_transport_setting_is_named_in_the_status():
    """Best effort on a transport that loses large frames: /diagnostics names the setting."""
    from pspnet_ros.ros.transport_hint import LARGE_FRAMES_SETTING, large_best_effort_hint

    hint = large_best_effort_hint("rmw_fastrtps_cpp", {}, (2, 14, 5))
    args = ("node", "hw")
    rest = ("/image", {}, "m", (96, 320))
    status = D.build_status(*args, window(received=0), False, *rest, transport_hint=hint)
    values = {kv.key: kv.value for kv in status.values}
    assert status.level == D.WARN and LARGE_FRAMES_SETTING in status.message
    assert values["transport"] == hint
    # frames arrive: the usual message, the advice stays in the values
    status = D.build_status(*args, window(received=10, processed=10), False, *rest, transport_hint=hint)
    assert status.level == D.OK and {kv.key for kv in status.values} >= {"transport"}
    status = D.build_status(*args, window(received=10, processed=10), False, *rest)
    assert "transport" not in {kv.key for kv in status.values}
