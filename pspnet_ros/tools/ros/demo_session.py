"""The ROS half of ``make demo``: node process + replay + recorder over real DDS.

``run_session`` starts ``segmentation_node`` as its own process with a parameter file, replays a
bag to it with a reliable publisher (and /clock, the node runs on sim time), records every output
in this process and stops the node. It returns what it saw; ``pspnet_ros.tools.demo`` turns that into
pictures and numbers.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from pspnet_ros.tools.ros.replay import Replayer

from .node_process import NodeProcess, node_env

LOGGER = logging.getLogger(__name__)

OUTPUTS = ("labels", "color", "overlay", "drivable")
GRID = "drivable_grid"  # nav_msgs/OccupancyGrid, recorded when the node runs with bev.enable
NODE_NAME = "segmentation_node"


class SessionError(RuntimeError):
    """The pipeline could not run; the message says what happened (node log excerpt included)."""


@dataclass
class SessionResult:
    outputs: Dict[int, Dict[str, np.ndarray]] = field(default_factory=dict)  # stamp -> kind -> px
    kinds: tuple = OUTPUTS  # the outputs waited for (OUTPUTS, + GRID with a grid topic)
    received: Dict[int, Dict[str, float]] = field(default_factory=dict)  # stamp -> kind -> wall
    published: Dict[int, float] = field(default_factory=dict)  # image stamp -> wall time sent
    frame_ids: Dict[int, str] = field(default_factory=dict)
    class_info: Optional[str] = None
    diagnostics: Dict[str, str] = field(default_factory=dict)  # last status of the node
    startup_s: float = 0.0
    warmup_frames: int = 0  # restamped copies of the first frame sent until outputs came back
    warmup_stamps: set = field(default_factory=set)
    warmup_done: bool = False
    replay_s: float = 0.0
    node_returncode: Optional[int] = None
    node_log: Optional[Path] = None


def _stamp(header) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


def _pixels(msg) -> np.ndarray:
    from pspnet_ros.image_codec import decode_image

    if hasattr(msg, "info"):  # OccupancyGrid: (height, width) int8 cells, row-major
        return np.array(msg.data, np.int8).reshape(msg.info.height, msg.info.width)
    if msg.encoding == "mono8":
        step = msg.step
        data = np.frombuffer(msg.data, np.uint8).reshape(msg.height, step)[:, : msg.width]
        return data.copy()
    img = decode_image(msg.height, msg.width, msg.encoding, msg.step, msg.is_bigendian, msg.data)
    arr = img.array[..., ::-1] if img.bgr else img.array
    return np.ascontiguousarray(arr)


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def run_session(bag: Path, params_file: Path, *, workdir: Path, domain_id: int, rate: float = 1.0,
                image_topic: str = "/camera/image_raw", info_topic: str = "/camera/camera_info",
                startup_timeout: float = 300.0, idle_timeout: float = 10.0,
                grid_topic: Optional[str] = None) -> SessionResult:
    """Run the node over ``bag``; with ``grid_topic`` also record its OccupancyGrid (as GRID)."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    res = SessionResult(node_log=workdir / "node.log", kinds=OUTPUTS + ((GRID,) if grid_topic else ()))
    env = node_env(domain_id)
    # Our own participant must use the same discovery range (read when it is created).
    saved_range = os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE")
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain_id)
    if saved_range is None:
        os.environ.pop("ROS_AUTOMATIC_DISCOVERY_RANGE", None)
    else:
        os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = saved_range
    node = rclpy.create_node("pspnet_demo", context=context)
    lock = threading.Lock()
    last_output = [time.monotonic()]

    def on_output(kind):
        def callback(msg):
            # Keep the callback minimal (pixels are extracted after the run): a slow reader
            # lets the node's small reliable output queue replace samples before we ack them.
            now_wall, stamp = time.time(), _stamp(msg.header)
            with lock:
                if stamp in res.warmup_stamps and res.warmup_done:
                    return  # a late output of a warm-up frame
                res.outputs.setdefault(stamp, {})[kind] = msg
                res.received.setdefault(stamp, {})[kind] = now_wall
                res.frame_ids[stamp] = msg.header.frame_id
                last_output[0] = time.monotonic()
        return callback

    def on_class_info(msg):
        res.class_info = msg.data

    def on_diagnostics(msg):
        for status in msg.status:
            if "segmentation" in status.name or "pspnet" in status.name:
                res.diagnostics = {kv.key: kv.value for kv in status.values}
                level = status.level
                res.diagnostics["level"] = str(ord(level) if isinstance(level, bytes) else level)
                res.diagnostics["message"] = status.message

    reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    subs = [node.create_subscription(Image, f"/segmentation/{k}", on_output(k), reliable)
            for k in OUTPUTS]
    if grid_topic:
        from nav_msgs.msg import OccupancyGrid

        subs.append(node.create_subscription(OccupancyGrid, grid_topic, on_output(GRID), reliable))
    node.create_subscription(String, "/segmentation/class_info", on_class_info,
                             QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                        durability=DurabilityPolicy.TRANSIENT_LOCAL))
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spinner = threading.Thread(target=_spin, args=(executor, context), daemon=True)
    spinner.start()

    def on_publish(topic, bag_ns, wall):
        if topic == image_topic:
            res.published[bag_ns] = wall

    replayer = Replayer(node, bag, rate=rate, clock_hz=40.0, on_publish=on_publish,
                        topics=[image_topic, info_topic])
    t0 = time.monotonic()
    node_proc = NodeProcess(params_file, res.node_log, env,
                            ros_args=["-r", f"image:={image_topic}", "-r", f"camera_info:={info_topic}"])
    proc = node_proc.proc
    LOGGER.info("started the node: %s", " ".join(node_proc.cmd))
    try:
        # Ready = the node's input matched our reliable publisher, its outputs matched our
        # subscriptions, and class_info (published once the model is loaded) arrived.
        image_pub = replayer.topics[image_topic].publisher
        while not (res.class_info is not None and image_pub.get_subscription_count() > 0
                   and all(s.get_publisher_count() > 0 for s in subs)):
            if proc.poll() is not None:
                raise SessionError(f"segmentation_node exited with code {proc.returncode} before "
                                   f"it was ready; last lines of {res.node_log}:\n"
                                   f"{_tail(res.node_log)}")
            if time.monotonic() - t0 > startup_timeout:
                raise SessionError(f"segmentation_node not ready after {startup_timeout:.0f} s; "
                                   f"last lines of {res.node_log}:\n{_tail(res.node_log)}")
            time.sleep(0.05)
        # Discovery runs both ways and at its own pace on a loaded machine: our side seeing the
        # node's reader does not mean the node's reader accepts our writer yet, and frames sent
        # before that are lost without a trace. So the pipeline is proven end to end first:
        # the bag's first frame, stamped before the bag starts, goes out once a second until all
        # its outputs come back. Those warm-up frames are not part of the results.
        res.warmup_frames = _warm_up(replayer, image_topic, res, lock, proc,
                                     startup_timeout - (time.monotonic() - t0), info_topic)
        res.startup_s = time.monotonic() - t0
        LOGGER.info("node ready after %.1f s; replaying %s at x%g", res.startup_s, bag, rate)
        t1 = time.monotonic()
        replayer.run()
        res.replay_s = time.monotonic() - t1
        last_output[0] = max(last_output[0], time.monotonic())
        # The node runs on the bag's clock: keep it ticking past the bag's end (as a longer
        # recording would) so its timers - diagnostics - go on while the last frames finish.
        bag_end, t_end = replayer.end_ns, time.monotonic()

        def tick() -> None:
            replayer.publish_clock(bag_end + int((time.monotonic() - t_end) * 1e9))

        # Wait for every frame's outputs, or until nothing came for idle_timeout seconds (the
        # node drops frames it cannot keep up with: those never come).
        while True:
            with lock:
                complete = all(len(res.outputs.get(s, {})) == len(res.kinds) for s in res.published)
                idle = time.monotonic() - last_output[0]
            if complete or idle > idle_timeout or proc.poll() is not None:
                break
            tick()
            time.sleep(0.025)
        settle = time.monotonic() + 2.5  # one more diagnostics period with the final counts
        while time.monotonic() < settle and proc.poll() is None:
            tick()
            time.sleep(0.025)
    finally:
        res.node_returncode = node_proc.stop(timeout=10.0)
        if node_proc.stop_s is not None and node_proc.stop_s >= 10.0:
            LOGGER.warning("segmentation_node ignored SIGINT for 10 s; it was killed")
        context.try_shutdown()
        spinner.join(5)
        node.destroy_node()
    for kinds in res.outputs.values():
        for kind, msg in kinds.items():
            kinds[kind] = _pixels(msg)
    return res


def _warm_up(replayer: Replayer, image_topic: str, res: SessionResult, lock, proc,
             timeout: float, info_topic: Optional[str] = None) -> int:
    """Publish restamped copies of the first frame until one comes back with every output.

    Its camera_info goes with it: the grid needs it.
    """
    from pspnet_ros.tools.bags import messages, storage

    reader = storage.open_reader(replayer.bag)
    try:
        conn = next(c for c in reader.connections if c.topic == image_topic)
        _, first_ns, data = next(iter(reader.messages(connections=[conn])))
        info_conn = next((c for c in reader.connections if c.topic == info_topic), None)
        info = (messages.deserialize(next(iter(reader.messages(connections=[info_conn])))[2], info_conn.msgtype)
                if info_conn is not None and info_topic in replayer.topics else None)
    finally:
        reader.close()
    msg = messages.deserialize(data, conn.msgtype)
    publisher = replayer.topics[image_topic].publisher
    deadline = time.monotonic() + max(timeout, 10.0)
    sent: List[int] = []
    while True:
        # Increasing stamps well before the bag (the sim clock never goes back): 100 s before
        # its start, 50 ms apart; the deadline stops this long before they could reach it.
        stamp = first_ns - 100_000_000_000 + 50_000_000 * len(sent)
        msg.header = messages.header(stamp, msg.header.frame_id)
        replayer.publish_clock(stamp)
        with lock:
            res.warmup_stamps.add(stamp)
        if info is not None:
            info.header = messages.header(stamp, info.header.frame_id)
            replayer.topics[info_topic].publisher.publish(messages.serialize(info))
        publisher.publish(messages.serialize(msg))
        sent.append(stamp)
        step_end = time.monotonic() + 1.0
        while time.monotonic() < step_end:
            with lock:
                done = any(len(res.outputs.get(s, {})) == len(res.kinds) for s in sent)
            if done:
                time.sleep(0.5)  # let the other warm-up frames in flight arrive, then forget them
                with lock:
                    res.warmup_done = True
                    for s in sent:
                        res.outputs.pop(s, None)
                        res.received.pop(s, None)
                        res.frame_ids.pop(s, None)
                return len(sent)
            if proc.poll() is not None:
                raise SessionError(f"segmentation_node exited with code {proc.returncode}")
            time.sleep(0.02)
        if time.monotonic() > deadline:
            raise SessionError(f"no output from segmentation_node for {len(sent)} warm-up frames")


def _spin(executor, context) -> None:
    while context.ok():
        try:
            executor.spin_once(timeout_sec=0.05)
        except Exception:  # the context was shut down while spinning
            if context.ok():
                raise
            return
