"""The node's per-kind log throttle and its test-only fault injection (both ROS-free)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from pspnet_ros.inference.engine import classify_error
from pspnet_ros.ros.faults import ENV_OOM_FRAME_ID, fault_hook_from_env
from pspnet_ros.ros.log_throttle import KindThrottle, problem_kind


def test_problem_kind_ignores_numbers_and_quoted_values():
    a = problem_kind("data has 16 bytes but step*height = 30*10 = 300 (10x10 rgb8)")
    assert a == problem_kind("data has 9000 bytes but step*height = 3*1 = 3 (1x1 rgb8)")
    assert problem_kind("unsupported encoding 'hsv8'") == problem_kind("unsupported encoding 'x'")
    assert problem_kind("unsupported encoding 'hsv8'") != problem_kind("missing encoding (empty string)")


def test_one_line_per_kind_per_period_with_the_count_of_suppressed_ones():
    now = [0.0]
    t = KindThrottle(period_s=5.0, max_kinds=3, clock=lambda: now[0])
    assert t.allow("a") == 0
    assert t.allow("b") == 0  # another kind is not hidden by the first
    assert t.allow("a") is None and t.allow("a") is None
    now[0] = 5.0
    assert t.allow("a") == 2  # the next line says how many were suppressed
    assert t.allow("a") is None
    for k in "cdefg":  # ever-new kinds: memory stays bounded, the oldest are forgotten
        t.allow(k)
    assert len(t._seen) == 3


def test_fault_injection_is_off_unless_the_environment_asks(monkeypatch):
    monkeypatch.delenv(ENV_OOM_FRAME_ID, raising=False)
    assert fault_hook_from_env() is None
    monkeypatch.setenv(ENV_OOM_FRAME_ID, "boom")
    hook = fault_hook_from_env()
    item = lambda fid: SimpleNamespace(context=SimpleNamespace(header=SimpleNamespace(frame_id=fid)))  # noqa: E731
    hook([item("camera"), SimpleNamespace(context=None)])  # other frames pass
    with pytest.raises(torch.OutOfMemoryError) as err:
        hook([item("camera"), item("boom")])
    assert classify_error(err.value) == "oom"  # what the engine reports for a real CUDA OOM
