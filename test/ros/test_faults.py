"""Faults around the node process, over real DDS with the real engine.

- Node ``/a`` starts after its camera, the camera restarts (a new process-like participant,
  reliable), then restarts as a best-effort camera (``qos_reliability: auto`` must follow), then
  the node gets SIGINT while frames flow. Its checkpoint lives in a read-only folder and its
  Python-level file, network and exec activity is recorded (test/ros/audit_hook.py): nothing may
  be written where a parameter points, no socket, no program started, no unrestricted unpickling.
- Node ``/b`` starts before any camera, serves a reliable and a best-effort subscriber, gets
  simulated CUDA out-of-memory errors on some frames (``PSPNET_TEST_OOM_FRAME_ID``, test-only),
  then SIGTERM while frames flow.
- Broken checkpoints (truncated, class/weights mismatch, a directory, a malicious pickle) and
  broken parameter files: exit non-zero with a message naming the file and the problem.

Startup failures already covered by test_node_startup_errors.py (missing file, garbage file,
bad YAML, wrong parameter type, ...) are not repeated here.
"""

from __future__ import annotations

import os
import pickle
import shutil
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import rclpy  # noqa: F401  (the ROS layer must run: a missing rclpy is an error, not a skip)

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

import audit_hook  # noqa: E402
from ros_harness import (NodeProcess, RosClient, diag_values, domain_id_for, find_status,  # noqa: E402
                         image_msg, reliable_qos, ros_env, stamp_ns, warm_up)

T0 = 1_700_000_300_000_000_000
OOM_FRAME_ID = "inject_oom"
FAIL_FRAME_ID = "inject_failure"
FAULT_NODE = Path(__file__).resolve().parent / "fault_node.py"
PARAMS = {"device": "cpu", "inference_size": [64, 192], "diagnostics_period": 0.2,
          "publish_color": False, "publish_overlay": False, "publish_drivable": False}
BEST_EFFORT = QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT)


@pytest.fixture(scope="module")
def domain():
    return domain_id_for(__name__)


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("faults")


@pytest.fixture(scope="module")
def readonly_checkpoint(tmp, tiny_checkpoint):
    folder = tmp / "readonly_models"
    folder.mkdir()
    ckpt = Path(shutil.copy2(tiny_checkpoint, folder / "tiny.pt"))
    ckpt.chmod(0o444)
    folder.chmod(0o555)
    yield ckpt
    folder.chmod(0o755)


@pytest.fixture(scope="module")
def frames(kitti_frames):
    rgb = kitti_frames[0][1]
    return {"quarter": np.ascontiguousarray(rgb[::4, ::4]),  # 94x311, about 88 kB
            "small": np.ascontiguousarray(rgb[150:214, 400:560])}  # 64x160, one UDP datagram


class Camera:
    """A camera driver stand-in: its own participant, publishing at ``rate`` Hz in a thread."""

    def __init__(self, domain: int, name: str, qos, frame: np.ndarray, frame_id: str) -> None:
        self.client = RosClient(domain, name=name)
        self.pub = self.client.node.create_publisher(Image, "/a/image", qos)
        self.frame, self.frame_id = frame, frame_id
        self.sent: list = []
        self._stop = threading.Event()
        self._thread = None

    def publish(self, stamp: int) -> None:
        self.pub.publish(image_msg(self.frame, stamp, self.frame_id))
        self.sent.append(stamp)

    def start(self, rate: float, first: int) -> "Camera":
        def run():
            i = 0
            while not self._stop.wait(1.0 / rate):
                self.publish(first + i)
                i += 1
        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self.client.close()


def warm_up_from(cam: Camera, labels, timeout: float = 120.0) -> None:
    """Publish a frame a second until an output of *this* camera arrives, then forget the outputs.

    Outputs of the previous camera may still be in flight and must not count as discovery.
    """
    deadline = time.monotonic() + timeout
    i = 0
    while not any(m.header.frame_id == cam.frame_id for m in labels.messages):
        assert time.monotonic() < deadline, f"no output for {cam.frame_id} after {timeout} s"
        i += 1
        cam.publish(i * 1_000_000_000)
        end = time.monotonic() + 1.0
        while time.monotonic() < end and not any(m.header.frame_id == cam.frame_id for m in labels.messages):
            time.sleep(0.02)
    labels.clear()


# Python-level events the libraries cause on import, allowed: ctypes.util.find_library runs
# `ldconfig -p` (a local query, from cuda.pathfinder in torch's CUDA build) through a temp file,
# and importing torch._dynamo creates its cache folder under /tmp.
ALLOWED_EXEC = ("/sbin/ldconfig', ['/sbin/ldconfig', '-p']",)


@pytest.fixture(scope="module")
def node_a_env(tmp, domain):
    env, log = audit_hook.install(tmp, "node_a")
    return ros_env(domain, **env), log


def with_stamp(stamp):
    return lambda m: stamp_ns(m.header) == stamp


def test_node_after_camera_camera_restarts_and_sigint(tmp, domain, readonly_checkpoint, frames, node_a_env):
    env, _log = node_a_env
    before = audit_hook.snapshot(readonly_checkpoint.parent)
    client = RosClient(domain, name="observer_a")
    labels, _ = client.collect(Image, "/a/segmentation/labels", reliable_qos(200))
    # The camera is up and publishing before the node exists.
    cam = Camera(domain, "camera_1", reliable_qos(5), frames["quarter"], "cam1").start(5.0, T0)
    node = NodeProcess(tmp, domain, {"checkpoint": str(readonly_checkpoint), "qos_reliability": "auto", **PARAMS},
                       namespace="/a", env=env, name="node_a")
    try:
        node.wait_for_output("serving 1 camera", timeout=120)
        got = labels.wait_for(lambda m: m.header.frame_id == "cam1", 60, "labels of the camera that was up first\n"
                              + node.output())
        assert stamp_ns(got.header) in cam.sent

        # The camera restarts: its participant goes away, a new one publishes (reliable again).
        cam.close()
        cam = Camera(domain, "camera_2", reliable_qos(5), frames["quarter"], "cam2")
        warm_up_from(cam, labels)
        for k in range(3):
            cam.publish(T0 + 1_000 + k)
            labels.wait_for(with_stamp(T0 + 1_000 + k), 60, f"frame {k} after the camera restarted\n" + node.output())

        # It restarts once more as a best-effort camera: auto QoS must follow it.
        cam.close()
        cam = Camera(domain, "camera_3", BEST_EFFORT, frames["small"], "cam3")
        node.wait_for_output("publishers offer best_effort; subscribing best_effort", timeout=60)
        warm_up_from(cam, labels)
        for k in range(3):
            cam.publish(T0 + 2_000 + k)
            msg = labels.wait_for(with_stamp(T0 + 2_000 + k), 60, f"frame {k} from the best-effort camera")
            assert msg.header.frame_id == "cam3" and (msg.height, msg.width) == frames["small"].shape[:2]

        # SIGINT while frames flow: clean exit within the 2 s budget.
        cam.start(30.0, T0 + 3_000)
        time.sleep(1.0)
        assert node.proc.poll() is None, node.output()
        rc = node.stop(signal.SIGINT)
    finally:
        cam.close()
        client.close()
        node.stop(signal.SIGKILL)
    out = node.output()
    print(f"node /a: SIGINT under a 30 Hz camera -> exit {rc} in {node.stop_seconds:.2f} s")
    assert rc == 0 and "Traceback" not in out, out
    assert "did not stop" not in out, out  # the engine worker joined (no hung thread)
    assert node.stop_seconds < 2.0, f"exit took {node.stop_seconds:.2f} s"
    assert audit_hook.snapshot(readonly_checkpoint.parent) == before, "the checkpoint folder changed"


def test_node_a_wrote_nowhere_near_its_parameters_and_used_no_network(readonly_checkpoint, node_a_env):
    _env, log = node_a_env
    events = audit_hook.events(log)
    assert events is not None
    writes = [e[1] for e in events if e[0] == "write"]
    folder = str(readonly_checkpoint.parent)
    assert not [w for w in writes if w.startswith(folder)], writes
    assert not [e for e in events if e[0] == "file" and folder in e[2]], events
    assert not [e for e in events if e[0] in ("net", "unpickle")], events
    assert not [e for e in events if e[0] == "exec" and not any(a in e[2] for a in ALLOWED_EXEC)], events
    print(f"node /a audit: {len(writes)} Python-level file writes, none under {folder}: {sorted(set(writes))[:10]}")


def test_node_a_loaded_no_tool_module(node_a_env):
    """The running node (real model, default engine factory) imports the runtime only (issue 21)."""
    _env, log = node_a_env
    imported = {e[1] for e in audit_hook.events(log) if e[0] == "import"}
    # (python -m pspnet_ros.ros.node: the node module itself runs as __main__, its imports are seen)
    assert {"pspnet_ros.ros.outputs", "pspnet_ros.inference.segmenter"} <= imported, " ".join(sorted(imported))
    tools = sorted(m for m in imported if m.startswith("pspnet_ros.tools"))
    assert not tools, f"the node process imported tool modules: {tools}"
    print(f"node /a imported {len(imported)} pspnet_ros modules, no tool module")


def test_node_before_camera_oom_output_qos_and_sigterm(tmp, domain, tiny_checkpoint, frames):
    node = NodeProcess(tmp, domain, {"checkpoint": str(tiny_checkpoint), "qos_reliability": "auto",
                                     "output_resolution": "network", **PARAMS},
                       namespace="/b", name="node_b", script=FAULT_NODE,
                       script_args=["--oom-frame-id", OOM_FRAME_ID])
    client = None
    flood = threading.Event()
    try:
        node.wait_for_output("serving 1 camera", timeout=120)
        client = RosClient(domain, name="camera_b")  # the camera appears after the node
        pub = client.node.create_publisher(Image, "/b/image", reliable_qos(5))
        reliable, _ = client.collect(Image, "/b/segmentation/labels", reliable_qos(100))
        best_effort, _ = client.collect(Image, "/b/segmentation/labels", BEST_EFFORT)
        diag, _ = client.collect(DiagnosticArray, "/diagnostics", reliable_qos(100))
        frame = frames["quarter"]
        warm_up(lambda s: pub.publish(image_msg(frame, s, "cam_b")), [reliable, best_effort])

        for k in range(3):  # both kinds of subscriber get every frame
            pub.publish(image_msg(frame, T0 + 10 + k, "cam_b"))
            for name, coll in (("reliable", reliable), ("best-effort", best_effort)):
                coll.wait_for(with_stamp(T0 + 10 + k), 60, f"labels {k} on the {name} subscriber")

        def failed_total(at_least):
            def ok(m):
                s = find_status(m, "/b/segmentation_node")
                return s is not None and int(diag_values(s)["failed (total)"]) >= at_least
            return int(diag_values(find_status(diag.wait_for(ok, 30, f"failed >= {at_least}\n" + node.output()),
                                               "/b/segmentation_node"))["failed (total)"])

        for k in range(2):  # out of memory on a frame: counted as failed, the next frame processed
            oom_stamp, good_stamp = T0 + 20 + 2 * k, T0 + 21 + 2 * k
            pub.publish(image_msg(frame, oom_stamp, OOM_FRAME_ID))
            assert failed_total(k + 1) == k + 1
            pub.publish(image_msg(frame, good_stamp, "cam_b"))
            reliable.wait_for(with_stamp(good_stamp), 60, f"the frame after out-of-memory {k}")
            assert not [m for m in reliable.messages if stamp_ns(m.header) == oom_stamp]
        node.wait_for_output("frame failed (oom)", timeout=10)
        assert "out of memory" in node.output()

        # SIGTERM while a 30 Hz camera floods the node.
        def run():
            i = 0
            while not flood.wait(1 / 30):
                pub.publish(image_msg(frame, T0 + 100 + i, "cam_b"))
                i += 1
        threading.Thread(target=run, daemon=True).start()
        time.sleep(1.0)
        assert node.proc.poll() is None, node.output()
        rc = node.stop(signal.SIGTERM)
    finally:
        flood.set()
        if client is not None:
            client.close()
        node.stop(signal.SIGKILL)
    out = node.output()
    print(f"node /b: SIGTERM under a 30 Hz camera -> exit {rc} in {node.stop_seconds:.2f} s")
    assert rc == 0 and "Traceback" not in out and "did not stop" not in out, out
    assert node.stop_seconds < 2.0, f"exit took {node.stop_seconds:.2f} s"


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _bad_checkpoints(folder: Path, tiny: Path):
    """Name -> (checkpoint path, fragments the message must contain)."""
    import torch

    from pspnet_ros.tools.data.classes import dataset_meta
    from pspnet_ros.models import build_pspnet

    good = tiny.read_bytes()
    (folder / "truncated.pt").write_bytes(good[: len(good) // 2])
    blob = torch.load(tiny, weights_only=True)
    kw = dict(blob["meta"]["arch_kwargs"], num_classes=3)  # weights of a 3-class model ...
    blob["model"] = build_pspnet(**kw).state_dict()  # ... under metadata for 2 classes
    torch.save(blob, folder / "class_mismatch.pt")
    (folder / "a_directory.pt").mkdir()
    meta = dataset_meta("kitti_road")
    marker = folder / "pwned"
    torch.save({"format": "pspnet_ros/1", "model": {}, "meta": meta, "x": _Evil(marker)},
               folder / "malicious.pt", pickle_module=pickle)
    return {
        "truncated": (folder / "truncated.pt", ["truncated.pt", "truncated or corrupt"]),
        "class_mismatch": (folder / "class_mismatch.pt", ["class_mismatch.pt", "do not match the architecture"]),
        "directory": (folder / "a_directory.pt", ["a_directory.pt", "not a regular file"]),
        "malicious": (folder / "malicious.pt", ["malicious.pt", "refused to load"]),
    }, marker


def test_broken_checkpoints_and_parameter_files_exit_with_a_clear_message(tmp, domain, tiny_checkpoint):
    folder = tmp / "broken"
    folder.mkdir()
    cases, marker = _bad_checkpoints(folder, tiny_checkpoint)
    audit_env, audit_log = audit_hook.install(tmp, "malicious")
    procs, expected = {}, {}
    for name, (path, fragments) in cases.items():
        env = ros_env(domain, **audit_env) if name == "malicious" else None
        procs[name] = NodeProcess(tmp, domain, {"checkpoint": str(path), "device": "cpu"}, name=name, env=env)
        expected[name] = fragments
    # Parameter files: one that does not exist, one giving a string where a list belongs.
    procs["no_params_file"] = NodeProcess(tmp, domain, {}, name="no_params_file",
                                          params_file=tmp / "does_not_exist.yaml")
    expected["no_params_file"] = ["cannot start", "does_not_exist.yaml", "Error opening YAML file"]
    procs["string_for_list"] = NodeProcess(tmp, domain, {"cameras": "front", "checkpoint": str(tiny_checkpoint)},
                                           name="string_for_list")
    expected["string_for_list"] = ["cannot start", "'cameras'", "wrong type", "a list of strings"]

    failures = []
    for name, proc in procs.items():
        rc = proc.wait_exit(120)
        out = proc.output()
        if rc == 0 or "Traceback" in out or not all(f in out for f in expected[name]):
            failures.append(f"--- {name}: exit {rc}, expected {expected[name]} in:\n{out}")
    assert not failures, "\n".join(failures)
    assert not marker.exists(), "loading the malicious checkpoint executed its payload"
    events = audit_hook.events(audit_log)
    assert not [e for e in events if e[0] == "unpickle"], events
    assert not [e for e in events if e[0] == "exec" and not any(a in e[2] for a in ALLOWED_EXEC)], events


def test_persistent_engine_failure_ends_the_node_with_error_diagnostics(tmp, domain, tiny_checkpoint, frames):
    """A device that fails every frame ends the node with ERROR diagnostics and exit code 3.

    Fewer than max_consecutive_failures in a row keep the node serving (a good frame resets the
    count); reaching it publishes ERROR diagnostics, logs why and exits with code 3, the code the
    launch file's respawn restarts on.
    """
    node = NodeProcess(tmp, domain, {"checkpoint": str(tiny_checkpoint), "max_consecutive_failures": 3,
                                     **PARAMS},
                       namespace="/f", name="node_f", script=FAULT_NODE,
                       script_args=["--fail-frame-id", FAIL_FRAME_ID])
    client = None
    try:
        node.wait_for_output("serving 1 camera", timeout=120)
        client = RosClient(domain, name="camera_f")
        pub = client.node.create_publisher(Image, "/f/image", reliable_qos(10))
        labels, _ = client.collect(Image, "/f/segmentation/labels", reliable_qos(100))
        diag, _ = client.collect(DiagnosticArray, "/diagnostics", reliable_qos(100))
        frame = frames["small"]
        warm_up(lambda s: pub.publish(image_msg(frame, s, "cam_f")), [labels])

        def failed_total(at_least):
            def ok(m):
                s = find_status(m, "/f/segmentation_node")
                return s is not None and int(diag_values(s).get("failed (total)", 0)) >= at_least
            diag.wait_for(ok, 30, f"failed >= {at_least}\n" + node.output())

        for k in range(2):  # two failures in a row, then a good frame: still serving
            pub.publish(image_msg(frame, T0 + 500 + k, FAIL_FRAME_ID))
            failed_total(k + 1)
        pub.publish(image_msg(frame, T0 + 510, "cam_f"))
        labels.wait_for(with_stamp(T0 + 510), 60, "the good frame after two failures")
        assert node.proc.poll() is None, node.output()
        for k in range(3):  # three in a row: fatal
            pub.publish(image_msg(frame, T0 + 520 + k, FAIL_FRAME_ID))
            time.sleep(0.3)
        rc = node.wait_exit(30)
        fatal = diag.wait_for(lambda m: any(s.message.startswith("fatal:") for s in m.status), 10,
                              "the fatal diagnostics before the exit")
    finally:
        if client is not None:
            client.close()
        node.stop(signal.SIGKILL)
    out = node.output()
    print(f"node /f: persistent failure -> exit {rc}")
    assert rc == 3, out
    assert "3 consecutive frames failed" in out and "stopping:" in out and "Traceback" not in out, out
    status = [s for s in fatal.status if s.message.startswith("fatal:")][0]
    assert status.level in (2, b"\x02")  # DiagnosticStatus.ERROR
    assert "simulated persistent device failure" in status.message
