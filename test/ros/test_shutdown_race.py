"""An error the executor raises because the node is shutting down ends the node cleanly.

Seen in CI: SIGINT shut the context down between the executor's wait and its take of a message,
and rclpy's take_message raised RuntimeError (exit 1 with a traceback after a clean stop). The
same error while the context still runs is a real bug and must keep its traceback and exit code.
``fault_node.py --fail-spin`` raises it from the spin, after shutting down or not.
"""

from __future__ import annotations

from pathlib import Path

import rclpy  # noqa: F401  (the ROS layer must run: a missing rclpy is an error, not a skip)

from ros_harness import NodeProcess, domain_id_for  # noqa: E402

FAULT_NODE = Path(__file__).resolve().parent / "fault_node.py"


def test_an_error_from_the_shutdown_exits_0_and_one_while_running_keeps_its_traceback(tmp_path, tiny_checkpoint):
    domain = domain_id_for(__name__)
    params = {"checkpoint": str(tiny_checkpoint), "device": "cpu"}
    procs = {mode: NodeProcess(tmp_path, domain, params, name=mode, script=FAULT_NODE,
                               script_args=["--fail-spin", mode])
             for mode in ("after-shutdown", "running", "after-shutdown-other")}
    try:
        codes = {mode: p.wait_exit(120) for mode, p in procs.items()}
        out = {mode: p.output() for mode, p in procs.items()}
        assert codes["after-shutdown"] == 0, out["after-shutdown"]
        assert "the shutdown interrupted the executor (RuntimeError: simulated" in out["after-shutdown"]
        assert "Traceback" not in out["after-shutdown"]
        assert codes["running"] != 0 and "Traceback" in out["running"], out["running"]
        assert "simulated: Unable to convert call argument" in out["running"]
        # Only that race is benign: any other error while the context is down is a bug (issue 22 g).
        other = out["after-shutdown-other"]
        assert codes["after-shutdown-other"] != 0, other
        assert "[ERROR]" in other and "Traceback" in other and "ValueError: simulated teardown bug" in other, other
    finally:  # reaped even when an assertion (or a node that never exits) fails the test
        for p in procs.values():
            p.stop()
