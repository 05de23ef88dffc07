"""The node's per-kind log throttle (ROS-free), and no test seam in the production node."""

from __future__ import annotations

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


def test_production_node_reads_no_test_seam_from_the_environment():
    """Fault injection is a test entry point, never an environment variable the robot's node reads.

    The entry point is test/ros/fault_node.py wrapping main(engine_factory=...).
    """
    import inspect

    from pspnet_ros.ros import node

    src = inspect.getsource(node)
    assert "os.environ" not in src and "getenv" not in src
    assert "fault_hook" not in src
