"""A colcon workspace holding this checkout, and the ros2 CLI run inside it as a robot user does.

``build_workspace`` makes ``<root>/src/pspnet_ros`` a symlink to the checkout and runs
``colcon build`` with the venv's python (so scripts get its shebang). Every command then runs in
``bash -c 'source install/setup.bash && ...'``: the installed package, not the checkout, is what
``ros2 run``/``ros2 launch`` find and import.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Callable, Dict, List, Optional

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
TOOLS = ("colcon", "ros2")
DISCOVERY_RETRY_S = 20.0


def find_tool(name: str) -> Optional[str]:
    """``name`` next to this python (the venv), else on PATH (a sourced ROS 2 install)."""
    here = VENV_BIN / name
    return str(here) if here.is_file() else shutil.which(name)


def missing_tools() -> List[str]:
    return [t for t in TOOLS if find_tool(t) is None]


def workspace_env(domain: int) -> Dict[str, str]:
    env = dict(os.environ)
    env.update(PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}", ROS_DOMAIN_ID=str(domain),
               ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1",
               RCUTILS_COLORIZED_OUTPUT="0", RCUTILS_LOGGING_BUFFERED_STREAM="0")
    # The checkout must not leak in: only the workspace's install/ may provide pspnet_ros.
    env.pop("PYTHONPATH", None)
    env.pop("PSPNET_MODELS_DIR", None)
    return env


def domain_for(name: str) -> int:
    """Pick a ROS domain in 1..200 per process and module (as test/ros/ros_harness.py)."""
    return 1 + (os.getpid() * 7919 + zlib.crc32(name.encode())) % 200


class Workspace:
    """A built workspace: run commands with install/setup.bash sourced."""

    def __init__(self, root: Path, env: Dict[str, str]) -> None:
        self.root = root
        self.env = env
        self._backgrounds: List["Background"] = []

    def _bash(self, command: str, exec_: bool = False) -> List[str]:
        return ["bash", "-c", f"source install/setup.bash && {'exec ' if exec_ else ''}{command}"]

    def sh(self, command: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
        """Run ``command`` to completion; stdout and stderr together in ``.stdout``.

        A ``--no-daemon`` verb is a fresh DDS participant: when it answers "Node not found"
        its discovery had not seen the node yet (the pitfall in ../shared/wheels/README.md).
        Only that answer is retried, for at most DISCOVERY_RETRY_S; any other failure is returned.
        """
        deadline = time.monotonic() + DISCOVERY_RETRY_S
        while True:
            try:
                res = subprocess.run(self._bash(command), cwd=self.root, env=self.env, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
            except subprocess.TimeoutExpired as exc:
                raise AssertionError(self._timeout_report(command, timeout, exc.output)) from None
            if res.returncode == 0 or res.stdout.strip() != "Node not found" or time.monotonic() > deadline:
                return res
            time.sleep(0.5)

    def _timeout_report(self, command: str, timeout: float, output: object) -> str:
        """Describe a command that hung: its output, and the end of every background process's log.

        A ``ros2`` verb that waits for a service answer waits forever when the answer is lost;
        the node's log is where the reason is (e.g. rclpy's "failed to send response").
        """
        if isinstance(output, bytes):
            output = output.decode(errors="replace")
        lines = [f"{command!r} did not finish within {timeout} s; its output:", str(output or "(none)")]
        for bg in self._backgrounds:
            state = "running" if bg.proc.poll() is None else f"exit code {bg.proc.returncode}"
            lines.append(f"--- {bg.log_path.name} ({state}), last 40 lines:")
            lines.extend(bg.output().splitlines()[-40:])
        return "\n".join(lines)

    def sh_for(self, command: str, seconds: float) -> str:
        """Run a command that does not end by itself (``ros2 topic hz``) for ``seconds``; its output."""
        proc = subprocess.Popen(self._bash(command, exec_=True), cwd=self.root, env=self.env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            out, _ = proc.communicate(timeout=seconds)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)
            try:
                out, _ = proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, _ = proc.communicate()
        return out

    def retry(self, command: str, ok: Callable[[subprocess.CompletedProcess], bool], timeout: float = 60.0,
              what: str = "") -> subprocess.CompletedProcess:
        """Repeat ``command`` until ``ok`` (waiting for discovery); fail with the last output."""
        deadline = time.monotonic() + timeout
        while True:
            res = self.sh(command, timeout=timeout)
            if ok(res):
                return res
            if time.monotonic() > deadline:
                raise AssertionError(f"{what or command}: not as expected within {timeout} s; last output:\n"
                                     + res.stdout)
            time.sleep(1.0)

    def start(self, command: str, log_name: str) -> "Background":
        """Start a long-running command (``ros2 launch``, ``ros2 run``) in its own process group.

        Its own group, as a shell gives a foreground job, so that :meth:`Background.stop` can
        send SIGINT the way Ctrl-C does: to the whole group. Jazzy's ``ros2 run`` (ros2cli
        0.32) does not forward a SIGINT sent to its own pid to the executable it started (it
        relies on the terminal signalling the group; Kilted's forwards it).
        """
        log_path = self.root / f"{log_name}.log"
        log = open(log_path, "w")
        proc = subprocess.Popen(self._bash(command, exec_=True), cwd=self.root, env=self.env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        background = Background(proc, log, log_path)
        self._backgrounds.append(background)
        return background

    def stop_all(self) -> None:
        """Kill what :meth:`start` started and is still running (its whole process group)."""
        for bg in self._backgrounds:
            _kill_group(bg.proc)
            bg.close_log()
        self._backgrounds.clear()


class Background:
    """A command started by :meth:`Workspace.start`."""

    def __init__(self, proc: subprocess.Popen, log: object, log_path: Path) -> None:
        self.proc = proc
        self._log = log
        self.log_path = log_path

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_output(self, pattern: str, timeout: float = 120.0) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(pattern, self.output())
            if m:
                return m
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"no line matching {pattern!r} (exit code {self.proc.poll()}):\n" + self.output())

    def stop(self, timeout: float = 20.0) -> int:
        """SIGINT to the process group (what Ctrl-C does) and wait; the exit code.

        Whatever of the group is left afterwards (a child that ignored it) is killed, and the
        test fails.
        """
        try:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGINT)
                try:
                    self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    raise AssertionError(f"did not stop within {timeout} s of SIGINT:\n" + self.output()) from None
            if _group_alive(self.proc.pid):
                raise AssertionError("a process of the group outlived it after SIGINT:\n" + self.output())
        finally:
            _kill_group(self.proc)
            self.close_log()
        return self.proc.returncode

    def close_log(self) -> None:
        if not self._log.closed:
            self._log.close()


def _group_alive(pgid: int) -> bool:
    """Whether a live (not zombie) process of group ``pgid`` is left after 2 s."""
    deadline = time.monotonic() + 2.0
    while True:
        alive = False
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                alive = True
                break
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if proc.poll() is None:
        proc.wait()


def build_workspace(root: Path, domain: int) -> Workspace:
    """Colcon build this checkout (symlinked into ``root/src``) into ``root/install``."""
    missing = missing_tools()
    if missing:
        raise RuntimeError(
            f"{' and '.join(missing)} not found next to {sys.executable} or on PATH. Run `make setup` "
            "(it installs colcon and the ros2 CLI from ../shared/wheels), or source a ROS 2 install "
            "(source /opt/ros/<distro>/setup.bash) and `pip install colcon-common-extensions`.")
    (root / "src").mkdir(parents=True)
    (root / "src" / "pspnet_ros").symlink_to(REPO, target_is_directory=True)
    env = workspace_env(domain)
    res = subprocess.run([find_tool("colcon"), "build", "--packages-select", "pspnet_ros",
                          "--event-handlers", "console_direct+"], cwd=root, env=env, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)
    if res.returncode != 0:
        raise RuntimeError(f"colcon build failed (exit {res.returncode}):\n{res.stdout}")
    return Workspace(root, env)
