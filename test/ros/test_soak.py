"""``pspnet soak`` for 60 s in CI: the node under a 30 Hz camera keeps its memory and keeps answering.

The 30-minute run whose figures the README records uses the same command with ``--minutes 30``
(and the shipped model); it is not part of the test suite.
"""

from __future__ import annotations

import json
import subprocess
import sys


import rclpy  # noqa: F401  (the ROS layer must run: a missing rclpy is an error, not a skip)

from ros_harness import REPO  # noqa: E402


def test_soak_60_seconds(tmp_path, tiny_checkpoint):
    out = tmp_path / "soak.json"
    cmd = [sys.executable, "-m", "pspnet_ros.tools.cli", "soak", "--seconds", "60", "--warmup", "20", "--window", "10",
           "--checkpoint", str(tiny_checkpoint), "--device", "cpu", "--inference-size", "64x192",
           "--json", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=400)
    print(proc.stdout)
    assert proc.returncode == 0, proc.stdout + proc.stderr + (out.with_suffix(".node.log").read_text()
                                                            if out.with_suffix(".node.log").exists() else "")
    result = json.loads(out.read_text())
    cmp_ = result["comparison"]
    assert result["ok"] and cmp_["rss_growth_pct"] < 5.0, cmp_
    assert cmp_["start"]["answered"] > 0 and cmp_["end"]["answered"] > 0  # frames flowed to the end
    assert result["totals"]["node_failed"] == 0
    assert result["node_exit_code"] == 0
    assert len(result["windows"]) == 6 and len(result["rss_samples"]) >= 55
