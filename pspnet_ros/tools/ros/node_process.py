"""One harness for the tools that start ``segmentation_node`` as its own process.

The tools are ``pspnet soak``, ``make demo`` and ``benchmarks/ros_bench.py``; the harness gives a
private ROS domain, the node's environment, start, log and stop. No rclpy import: it only runs a
process.

Domains: the tools take one of 201-232 (Fast DDS's largest domain is 232), chosen from the pid,
never the caller's own ``ROS_DOMAIN_ID``; the test suite takes 1-200 (test/ros/ros_harness.py),
so a soak or demo started while tests run cannot cross-talk with them. Discovery is localhost
only.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

TOOL_DOMAINS = range(201, 233)


def interrupt(proc: subprocess.Popen, timeout: float, sig: int = signal.SIGINT) -> Tuple[bool, float]:
    """Send ``sig`` (Ctrl-C by default) and wait up to ``timeout`` s, then SIGKILL.

    Returns (whether it exited in time, seconds until it was gone).
    """
    start = time.monotonic()
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
        return True, time.monotonic() - start
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return False, time.monotonic() - start


def private_domain(seed: Optional[int] = None) -> int:
    """Return a ROS domain in TOOL_DOMAINS other than the caller's ``ROS_DOMAIN_ID``."""
    current = os.environ.get("ROS_DOMAIN_ID")
    choices = [d for d in TOOL_DOMAINS if str(d) != current]
    return choices[(os.getpid() if seed is None else seed) % len(choices)]


def node_env(domain: int, threads: Optional[int] = None, **extra: str) -> Dict[str, str]:
    """Return the environment for a node on ``domain``: localhost discovery, unbuffered plain logs."""
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               PYTHONUNBUFFERED="1", RCUTILS_COLORIZED_OUTPUT="0")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    env.update(extra)
    return env


def write_params(path: Path, params: Dict[str, Any]) -> Path:
    """Write a parameters file applying ``params`` to the node whatever its name and namespace."""
    import yaml

    path.write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}))
    return path


def node_command(params_file: Path, ros_args: Sequence[str] = (), lifecycle: bool = False) -> list:
    """Return the node's command line as a user runs it: the installed console script, else the module.

    ``lifecycle``: the managed node (``segmentation_lifecycle_node``), which starts unconfigured.
    """
    exe = Path(sys.executable).parent / ("segmentation_lifecycle_node" if lifecycle else "segmentation_node")
    if exe.is_file() and os.access(exe, os.X_OK):
        cmd = [str(exe)]
    elif lifecycle:
        cmd = [sys.executable, "-c", "import sys; from pspnet_ros.ros.node import lifecycle_main; "
                                     "sys.exit(lifecycle_main())"]
    else:
        cmd = [sys.executable, "-m", "pspnet_ros.ros.node"]
    return cmd + ["--ros-args", "--params-file", str(params_file), *ros_args]


class NodeProcess:
    """``segmentation_node`` (or, ``lifecycle``, the managed node) in a subprocess, its output in ``log_path``."""

    def __init__(self, params_file: Path, log_path: Path, env: Dict[str, str], *,
                 ros_args: Sequence[str] = (), cwd: Optional[Path] = None, lifecycle: bool = False) -> None:
        self.params_file = Path(params_file)
        self.log_path = Path(log_path)
        self.cmd = node_command(self.params_file, ros_args, lifecycle=lifecycle)
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(self.cmd, cwd=cwd, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        self.exit_code: Optional[int] = None
        self.stop_s: Optional[float] = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        self._log.flush()
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, n: int = 25) -> str:
        return "\n".join(self.output().splitlines()[-n:])

    def stop(self, timeout: float = 10.0) -> Optional[int]:
        """SIGINT, wait ``timeout`` s (then SIGKILL); returns the exit code."""
        if self.proc.poll() is None:
            _in_time, seconds = interrupt(self.proc, timeout)
            self.stop_s = round(seconds, 2)
        self.exit_code = self.proc.returncode
        if not self._log.closed:
            self._log.close()
        return self.exit_code
