"""Real processes over real DDS: start segmentation_node, publish frames, collect outputs.

Each test module gets its own ROS_DOMAIN_ID (from the pid and the module name) and localhost-only
discovery, so parallel runs and other engineers' tests do not cross-talk. The client side uses
its own rclpy Context and spins it in a background thread.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import yaml

from pspnet_ros.tools.ros.node_process import interrupt

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


def domain_id_for(name: str) -> int:
    """Return a domain in 1..200 (0 is everybody's default), different per process and module."""
    return 1 + (os.getpid() * 7919 + zlib.crc32(name.encode())) % 200


def ros_env(domain: int, **extra: str) -> Dict[str, str]:
    env = dict(os.environ)
    env.update(ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", RCUTILS_COLORIZED_OUTPUT="0",
               RCUTILS_LOGGING_BUFFERED_STREAM="0")
    env.update(extra)
    return env


def write_params(path: Path, params: Dict[str, Any]) -> Path:
    # "/**" applies to the node whatever its name and namespace.
    path.write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}))
    return path


class NodeProcess:
    """``python -m pspnet_ros.ros.node --ros-args --params-file ...`` in a subprocess."""

    def __init__(self, tmp: Path, domain: int, params: Dict[str, Any], *, namespace: str = "",
                 env: Optional[Dict[str, str]] = None, name: str = "node",
                 params_text: Optional[str] = None, params_file: Optional[Path] = None,
                 script: Optional[Path] = None, script_args: Sequence[str] = ()) -> None:
        if params_file is not None:  # used as given (it may not even exist)
            self.params_file = params_file
        elif params_text is not None:  # a hand-written (possibly broken) parameters file
            self.params_file = tmp / f"{name}.yaml"
            self.params_file.write_text(params_text)
        else:
            self.params_file = write_params(tmp / f"{name}.yaml", params)
        self.log_path = tmp / f"{name}.log"
        self._log = open(self.log_path, "w")
        # script: a test entry point wrapping node.main(engine_factory=...) (fault injection)
        head = [PYTHON, str(script), *script_args] if script else [PYTHON, "-m", "pspnet_ros.ros.node"]
        cmd = head + ["--ros-args", "--params-file", str(self.params_file)]
        if namespace:
            cmd += ["-r", f"__ns:={namespace}"]
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env or ros_env(domain), stdout=self._log,
                                     stderr=subprocess.STDOUT)
        self.stop_seconds: Optional[float] = None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_output(self, text: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"node exited ({self.proc.returncode}) before logging {text!r}:\n"
                                     + self.output())
            time.sleep(0.1)
        raise AssertionError(f"node did not log {text!r} within {timeout} s:\n" + self.output())

    def wait_exit(self, timeout: float = 60.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"node did not exit within {timeout} s:\n" + self.output()) from None

    def stop(self, sig: int = signal.SIGINT, timeout: float = 10.0) -> int:
        """Send ``sig`` and wait; returns the exit code (stop_seconds records how long it took)."""
        if self.proc.poll() is None:
            in_time, self.stop_seconds = interrupt(self.proc, timeout, sig)
            if not in_time:
                raise AssertionError(f"node ignored signal {sig} for {timeout} s:\n" + self.output())
        self._log.close()
        return self.proc.returncode


class Collector:
    """Messages received on one topic, with their arrival time (time.monotonic())."""

    def __init__(self) -> None:
        self.items: List[Tuple[float, Any]] = []
        self._cond = threading.Condition()

    def __call__(self, msg: Any) -> None:
        with self._cond:
            self.items.append((time.monotonic(), msg))
            self._cond.notify_all()

    @property
    def messages(self) -> List[Any]:
        with self._cond:
            return [m for _, m in self.items]

    def wait_for(self, pred: Callable[[Any], bool], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for _, m in self.items:
                    if pred(m):
                        return m
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out after {timeout} s waiting for {what} "
                                         f"({len(self.items)} messages received)")
                self._cond.wait(left)

    def clear(self) -> None:
        with self._cond:
            self.items.clear()


class RosClient:
    """A test-side rclpy node in its own Context, spun in a background thread."""

    def __init__(self, domain: int, name: str = "pspnet_test_client",
                 env_during_init: Optional[Dict[str, str]] = None) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        self.rclpy = rclpy
        self.context = rclpy.Context()
        # Read when the participant is created: discovery kept local like the node's (ros_env).
        env = {"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", **(env_during_init or {})}
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            rclpy.init(context=self.context, domain_id=domain)
            self.node = rclpy.create_node(name, context=self.context)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # context shut down while spinning
                if self.context.ok():
                    raise
                return

    def collect(self, msg_type: Any, topic: str, qos: Any = None) -> Tuple[Collector, Any]:
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        collector = Collector()
        qos = qos or QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        sub = self.node.create_subscription(msg_type, topic, collector, qos)
        return collector, sub

    def wait_until(self, pred: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            time.sleep(0.05)

    def call(self, srv_type: Any, name: str, request: Any, timeout: float = 30.0) -> Any:
        client = self.node.create_client(srv_type, name)
        try:
            if not client.wait_for_service(timeout_sec=timeout):
                raise AssertionError(f"service {name} not available within {timeout} s")
            future = client.call_async(request)
            deadline = time.monotonic() + timeout
            while not future.done():
                if time.monotonic() > deadline:
                    raise AssertionError(f"service {name} did not answer within {timeout} s")
                time.sleep(0.02)
            return future.result()
        finally:
            self.node.destroy_client(client)

    def close(self) -> None:
        self.context.try_shutdown()
        self._thread.join(5)
        self.node.destroy_node()


def image_msg(frame: np.ndarray, stamp_ns: int, frame_id: str, encoding: str = "rgb8"):
    """Return a sensor_msgs/Image with an exact stamp (built field by field, not with the node's code)."""
    import array

    from sensor_msgs.msg import Image

    msg = Image()
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    msg.header.frame_id = frame_id
    msg.height, msg.width = frame.shape[:2]
    msg.encoding = encoding
    msg.step = frame.shape[1] * (frame.shape[2] if frame.ndim == 3 else 1)
    data = array.array("B")
    data.frombytes(np.ascontiguousarray(frame).tobytes())
    msg.data = data
    return msg


def stamp_ns(header: Any) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


def as_array(msg: Any) -> np.ndarray:
    """Pixels of an output Image (mono8 -> (H, W), rgb8 -> (H, W, 3)), checking step."""
    channels = {"mono8": 1, "rgb8": 3}[msg.encoding]
    assert msg.step == msg.width * channels, (msg.step, msg.width, msg.encoding)
    arr = np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.width, channels)
    return arr[..., 0] if channels == 1 else arr


def kitti_camera_info(stamp_ns_: int, frame_id: str, height: int, width: int):
    """Return a camera_info like KITTI's left colour camera (P2 of the raw calibration)."""
    from sensor_msgs.msg import CameraInfo

    info = CameraInfo()
    info.header.stamp.sec, info.header.stamp.nanosec = divmod(stamp_ns_, 1_000_000_000)
    info.header.frame_id = frame_id
    info.height, info.width = height, width
    info.distortion_model = "plumb_bob"
    info.d = [0.0] * 5
    info.k = [721.5377, 0.0, 609.5593, 0.0, 721.5377, 172.854, 0.0, 0.0, 1.0]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.p = [721.5377, 0.0, 609.5593, 44.85728, 0.0, 721.5377, 172.854, 0.2163791, 0.0, 0.0, 1.0, 0.002745884]
    return info


def reliable_qos(depth: int = 10):
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    return QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE)


def diag_values(status: Any) -> Dict[str, str]:
    return {kv.key: kv.value for kv in status.values}


def find_status(array_msg: Any, name_part: str) -> Optional[Any]:
    for s in array_msg.status:
        if name_part in s.name:
            return s
    return None


def warm_up(publish: Callable[[int], None], collectors: Sequence[Collector], timeout: float = 120.0,
            every: float = 1.0) -> None:
    """Publish warm-up frames until every collector has received an output.

    DDS discovery runs both ways and the node only computes outputs somebody subscribes to, so
    the first frames may find no match yet; this waits for discovery, it does not retry lost
    data (the frames under test are published after it, once).
    ``publish(stamp_ns)`` sends one frame; warm-up stamps are 1..N seconds.
    """
    deadline = time.monotonic() + timeout
    i = 0
    while not all(c.items for c in collectors):
        if time.monotonic() > deadline:
            missing = [i for i, c in enumerate(collectors) if not c.items]
            raise AssertionError(f"no output on collectors {missing} after {timeout} s of warm-up")
        i += 1
        publish(i * 1_000_000_000)
        end = time.monotonic() + every
        while time.monotonic() < end and not all(c.items for c in collectors):
            time.sleep(0.02)
    for c in collectors:
        c.clear()
