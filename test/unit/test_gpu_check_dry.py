"""benchmarks/gpu_check.sh --dry-run: the one GPU call runs end to end on the CPU (tiny sizes).

So the script and every command line in it keep working between GPU loans.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_check_dry_run_passes_every_step(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path / "out"), OMP_NUM_THREADS="1", TMPDIR=str(tmp_path))
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--dry-run"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=900)
    summary = (tmp_path / "out" / "summary.txt").read_text()
    assert proc.returncode == 0, summary + proc.stdout[-3000:]
    assert "DRY RUN" in summary and "FAILED" not in summary
    for step in ("pytest test/gpu", "bench shipped model", "bench resnet50", "ros_bench node vs engine",
                 "train resnet50"):
        assert f"ok      {step}" in summary, summary
