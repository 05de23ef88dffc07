"""``pspnet replay`` / ``replay``: publish a bag's camera topics over ROS 2 (ros2 bag play stand-in).

    pspnet replay sample_bag                          # real time, reliable, like ros2 bag play
    pspnet replay sample_bag --rate 0.5 --loop --clock
    pspnet replay drive_bag --remap /front/image_raw:=/camera/image_raw
    ros2 run pspnet_ros replay sample_bag --ros-args -r /camera/image_raw:=/image

Publishes every ``sensor_msgs/Image``, ``CompressedImage`` and ``CameraInfo`` topic of a rosbag2
(mcap or sqlite3; ``--topic`` picks some, ``--all-topics`` adds every other topic whose message
type is installed) at the bag's pace scaled by ``--rate``. Messages go out exactly as recorded
(the serialized CDR bytes, headers untouched), with the QoS a camera driver and ``ros2 bag play``
use: reliable, volatile, keep last 10 (``--qos best_effort`` to change; topics recorded as
transient-local, like ``segmentation/class_info``, stay transient-local). ``--clock`` publishes
``/clock`` (rosgraph_msgs/Clock) from the bag's timestamps so nodes run with
``use_sim_time:=true``; with ``--loop`` the clock jumps back at each restart, as in
``ros2 bag play --loop``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from pspnet_ros.tools.bags import messages, storage

LOGGER = logging.getLogger(__name__)

CAMERA_TYPES = (messages.IMAGE, messages.COMPRESSED, messages.CAMERA_INFO)
CLOCK_TOPIC = "/clock"


class ReplayError(ValueError):
    pass


def message_class(msgtype: str):
    """Return the installed Python class of 'pkg/msg/Name', or None when the package is missing."""
    pkg, _, name = msgtype.split("/")
    try:
        return getattr(importlib.import_module(f"{pkg}.msg"), name)
    except (ImportError, AttributeError):
        return None


def parse_remaps(items: Sequence[str]) -> Dict[str, str]:
    remaps = {}
    for item in items:
        src, sep, dst = item.partition(":=")
        if not sep or not src or not dst:
            raise ReplayError(f"--remap expects FROM:=TO, got {item!r}")
        remaps[messages.validate_topic(src)] = messages.validate_topic(dst)
    return remaps


@dataclass
class _Topic:
    name: str  # in the bag
    out: str  # published as (after --remap)
    msgtype: str
    publisher: object = None


class Replayer:
    """Publishes a bag's messages with ``node``'s publishers at the bag's pace.

    ``on_publish(topic, bag_timestamp_ns, wall_time)`` is called after each message is sent
    (the demo uses it to measure latency). ``run()`` blocks until the bag (or every loop) is
    played or ``stop()`` is called; it needs no executor (publishing does not spin).
    """

    def __init__(self, node, bag: Path, *, topics: Sequence[str] = (), all_topics: bool = False,
                 rate: float = 1.0, loop: bool = False, clock_hz: float = 0.0,
                 remap: Optional[Dict[str, str]] = None, reliability: str = "reliable",
                 depth: int = 10, on_publish: Optional[Callable[[str, int, float], None]] = None):
        from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy)

        if rate <= 0:
            raise ReplayError(f"--rate must be > 0, got {rate}")
        if reliability not in ("reliable", "best_effort"):
            raise ReplayError(f"--qos must be reliable or best_effort, got {reliability!r}")
        self.node, self.bag, self.rate, self.loop = node, Path(bag), float(rate), loop
        self.clock_hz = float(clock_hz)
        self.on_publish = on_publish
        self.counts: Counter = Counter()
        self._stop = threading.Event()
        remap = remap or {}
        reader = storage.open_reader(self.bag)
        try:
            conns = list(reader.connections)
            self.start_ns, self.end_ns = reader.start_time, reader.end_time
        finally:
            reader.close()
        in_bag = {}
        for c in conns:
            in_bag.setdefault(c.topic, c)
        if topics:
            missing = [t for t in topics if t not in in_bag]
            if missing:
                raise ReplayError(f"topic(s) {', '.join(missing)} not in {self.bag} (it has "
                                  f"{', '.join(sorted(in_bag))})")
            chosen = [in_bag[t] for t in topics]
        else:
            chosen = [c for c in in_bag.values() if all_topics or c.msgtype in CAMERA_TYPES]
            if not any(c.msgtype in messages.IMAGE_TYPES for c in chosen):
                raise ReplayError(f"{self.bag} has no sensor_msgs/Image or CompressedImage topic "
                                  f"(topics: {', '.join(sorted(in_bag)) or 'none'})")
        self.topics: Dict[str, _Topic] = {}
        for c in chosen:
            cls = message_class(c.msgtype)
            if cls is None:
                LOGGER.warning("skipping %s: message type %s is not installed", c.topic, c.msgtype)
                continue
            offered = list(getattr(c.ext, "offered_qos_profiles", []) or [])
            latched = any(q.durability.name == "TRANSIENT_LOCAL" for q in offered)
            qos = QoSProfile(
                history=HistoryPolicy.KEEP_LAST, depth=1 if latched else depth,
                reliability=(ReliabilityPolicy.RELIABLE if reliability == "reliable"
                             else ReliabilityPolicy.BEST_EFFORT),
                durability=(DurabilityPolicy.TRANSIENT_LOCAL if latched
                            else DurabilityPolicy.VOLATILE))
            t = _Topic(c.topic, remap.get(c.topic, c.topic), c.msgtype)
            t.publisher = node.create_publisher(cls, t.out, qos)
            self.topics[c.topic] = t
        if not self.topics:
            raise ReplayError(f"nothing to publish from {self.bag}")
        self.clock_pub = None
        if self.clock_hz > 0:
            from rosgraph_msgs.msg import Clock

            # rclcpp's ClockQoS, as ros2 bag play uses: best effort, keep last 1.
            self.clock_pub = node.create_publisher(
                Clock, CLOCK_TOPIC, QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT))
            self._clock_msg = Clock()

    # ------------------------------------------------------------------ control
    def stop(self) -> None:
        self._stop.set()

    def wait_for_subscribers(self, timeout: float, topics: Optional[Sequence[str]] = None) -> bool:
        """Wait until every image topic (or ``topics``) has a matched subscription."""
        names = topics or [n for n, t in self.topics.items() if t.msgtype in messages.IMAGE_TYPES]
        deadline = time.monotonic() + timeout
        while not self._stop.is_set():
            waiting = [n for n in names if self.topics[n].publisher.get_subscription_count() == 0]
            if not waiting:
                return True
            if time.monotonic() > deadline:
                LOGGER.warning("no subscriber on %s after %.1f s; publishing anyway",
                               ", ".join(self.topics[n].out for n in waiting), timeout)
                return False
            time.sleep(0.05)
        return False

    def wait_for_node(self, name: str, timeout: float, spin: bool = True) -> bool:
        """Wait until node ``name`` (e.g. /segmentation_node) answers ``~/list_parameters``.

        A node takes messages only once its executor spins; a frame sent while it still loads
        its model meets a full keep-last-1 queue and is replaced by the next one. Its parameter
        service answers only when it spins, so an answer means "ready" for any ROS 2 node.
        ``spin=False`` when ``self.node`` is already spun by an executor elsewhere.
        """
        import rclpy
        from rcl_interfaces.srv import ListParameters

        name = "/" + name.strip("/")
        client = self.node.create_client(ListParameters, f"{name}/list_parameters")
        deadline = time.monotonic() + timeout
        try:
            future, sent_at = None, 0.0
            while not self._stop.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    LOGGER.warning("node %s did not answer within %.1f s; publishing anyway",
                                   name, timeout)
                    return False
                # Ask again every 2 s: while discovery is still one-sided the service drops its
                # response ("failed to send response") and the request is never answered.
                if future is None or (not future.done() and time.monotonic() - sent_at > 2.0):
                    if client.wait_for_service(timeout_sec=min(0.2, left)):
                        future, sent_at = client.call_async(ListParameters.Request(depth=1)), \
                            time.monotonic()
                    continue
                if spin:
                    rclpy.spin_until_future_complete(self.node, future, timeout_sec=min(0.2, left))
                else:
                    time.sleep(0.02)
                if future.done():
                    return True
            return False
        finally:
            self.node.destroy_client(client)

    def publish_clock(self, bag_ns: int) -> None:
        if self.clock_pub is None:
            return
        sec, nsec = divmod(int(bag_ns), 1_000_000_000)
        self._clock_msg.clock.sec, self._clock_msg.clock.nanosec = sec, nsec
        self.clock_pub.publish(self._clock_msg)

    def _sleep_until(self, wall_target: float, bag_origin: int, wall_origin: float) -> bool:
        """Sleep until ``wall_target`` (monotonic), ticking /clock; False when stopped."""
        period = 1.0 / self.clock_hz if self.clock_pub is not None else None
        while True:
            now = time.monotonic()
            if now >= wall_target:
                return not self._stop.is_set()
            step = wall_target - now if period is None else min(period, wall_target - now)
            if self._stop.wait(step):
                return False
            if period is not None:
                elapsed = min(time.monotonic(), wall_target) - wall_origin
                self.publish_clock(bag_origin + int(elapsed * self.rate * 1e9))

    # ------------------------------------------------------------------ playback
    def play_once(self) -> int:
        reader = storage.open_reader(self.bag)
        sent = 0
        try:
            conns = [c for c in reader.connections if c.topic in self.topics]
            wall_origin = time.monotonic()
            bag_origin = None
            for conn, timestamp, data in reader.messages(connections=conns):
                if bag_origin is None:
                    bag_origin = timestamp
                    self.publish_clock(timestamp)
                target = wall_origin + (timestamp - bag_origin) / 1e9 / self.rate
                if not self._sleep_until(target, bag_origin, wall_origin):
                    break
                self.publish_clock(timestamp)
                t = self.topics[conn.topic]
                t.publisher.publish(bytes(data))
                self.counts[t.out] += 1
                sent += 1
                if self.on_publish is not None:
                    self.on_publish(t.out, timestamp, time.time())
        finally:
            reader.close()
        return sent

    def run(self) -> int:
        """Play the bag (forever with ``loop``); returns the number of messages published.

        After the last message it waits for reliable subscribers' acknowledgements; after
        ``stop()`` (Ctrl-C) it does not: stopping is prompt.
        """
        total = 0
        while not self._stop.is_set():
            total += self.play_once()
            if not self.loop:
                break
        if not self._stop.is_set():
            self.wait_for_acks()
        return total

    def wait_for_acks(self, timeout: float = 5.0) -> None:
        """Block until reliable subscribers acknowledged everything (as --wait-for-all-acked).

        Without it a process that exits right after its last publish can take the last large
        (fragmented) frames with it.
        """
        from rclpy.duration import Duration

        for t in self.topics.values():
            t.publisher.wait_for_all_acked(Duration(seconds=timeout))


def split_ros_args(argv: Sequence[str]):
    """(our arguments, ROS arguments) from ``... --ros-args ... [--] ...``.

    rclpy's ``remove_ros_args`` would also take our ``--remap FROM:=TO`` value for a
    (deprecated) bare ROS remap rule, so only what follows ``--ros-args`` goes to rclpy.
    """
    ours, ros, in_ros = [], [], False
    for a in argv:
        if a == "--ros-args":
            in_ros = True
            ros.append(a)
        elif a == "--" and in_ros:
            in_ros = False
        elif in_ros:
            ros.append(a)
        else:
            ours.append(a)
    return ours, ros


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pspnet replay", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bag", type=Path, help="rosbag2 directory (mcap or sqlite3)")
    p.add_argument("--topic", action="append", default=[],
                   help="publish only this bag topic (repeatable)")
    p.add_argument("--all-topics", action="store_true",
                   help="also publish every non-camera topic whose message type is installed")
    p.add_argument("--rate", type=float, default=1.0, help="playback speed factor (default 1.0)")
    p.add_argument("--loop", action="store_true", help="play again from the start until Ctrl-C")
    p.add_argument("--clock", type=float, nargs="?", const=40.0, default=0.0, metavar="HZ",
                   help="publish /clock from bag time (default 40 Hz when given), for "
                        "use_sim_time:=true")
    p.add_argument("--remap", action="append", default=[], metavar="FROM:=TO",
                   help="publish bag topic FROM as TO (repeatable); --ros-args -r works too")
    p.add_argument("--qos", choices=("reliable", "best_effort"), default="reliable",
                   help="reliability of the publishers (default reliable, as ros2 bag play)")
    p.add_argument("--qos-depth", type=int, default=10, help="keep-last depth (default 10)")
    p.add_argument("--delay", type=float, default=0.0, help="seconds to wait before playing")
    p.add_argument("--wait-for-subscribers", type=float, default=0.0, metavar="SEC",
                   help="wait up to SEC for a subscriber on every image topic before playing")
    p.add_argument("--wait-for-node", action="append", default=[], metavar="NAME",
                   help="wait until node NAME (e.g. /segmentation_node) is up and spinning "
                        "(answers its parameter service) before playing; repeatable")
    p.add_argument("--wait-timeout", type=float, default=120.0,
                   help="seconds --wait-for-node waits at most (default 120)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


class _StopOnSignal:
    """SIGINT/SIGTERM stop the replay between two messages (within one message's time).

    rclpy's own handlers (rclpy 7.1 on Jazzy, 9.x on Kilted alike) shut the context down the
    moment the signal arrives, so the publish in progress, or the next one, fails with
    "publisher's context is invalid" (a traceback and exit 1), and a replay blocked outside
    Python never sees a KeyboardInterrupt. The replay installs these instead: the context stays
    valid until the loop has ended, and the process exits 0.
    """

    def __init__(self) -> None:
        self.event = threading.Event()
        self.replayer: Optional[Replayer] = None

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers belong to the main thread (an embedding caller's)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: object) -> None:
        # Ctrl-C on `ros2 launch` arrives twice (the terminal signals the group, launch forwards
        # it): from now on both signals are ignored (stopping takes one message), also while the
        # interpreter exits (it resets Python-handled signals to their default action: -2).
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        self.event.set()
        LOGGER.info("%s: stopping", signal.Signals(signum).name)
        if self.replayer is not None:
            self.replayer.stop()


def main(argv: Optional[List[str]] = None) -> int:
    import rclpy
    from rclpy.executors import ExternalShutdownException
    from rclpy.signals import SignalHandlerOptions

    ours, ros_args = split_ros_args(list(sys.argv[1:] if argv is None else argv))
    args = get_args_parser().parse_args(ours)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                            format="%(levelname)s %(name)s: %(message)s")
    stopper = _StopOnSignal()
    stopper.install()
    rclpy.init(args=["replay"] + ros_args, signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node("pspnet_replay")
    replayer = None
    try:
        replayer = Replayer(node, args.bag, topics=args.topic, all_topics=args.all_topics,
                            rate=args.rate, loop=args.loop, clock_hz=args.clock,
                            remap=parse_remaps(args.remap), reliability=args.qos,
                            depth=args.qos_depth)
        stopper.replayer = replayer
        if stopper.event.is_set():
            replayer.stop()
        LOGGER.info("replaying %s (%.2f s, rate x%g%s%s): %s", args.bag,
                    (replayer.end_ns - replayer.start_ns) / 1e9, args.rate,
                    ", loop" if args.loop else "", ", /clock" if args.clock else "",
                    ", ".join(f"{t.name}" + (f" -> {t.out}" if t.out != t.name else "")
                              for t in replayer.topics.values()))
        for name in args.wait_for_node:
            replayer.wait_for_node(name, args.wait_timeout)
        if args.wait_for_subscribers > 0:
            replayer.wait_for_subscribers(args.wait_for_subscribers)
        if args.delay > 0:
            stopper.event.wait(args.delay)
        replayer.run()
    except (ReplayError, messages.BagError) as exc:
        LOGGER.error("%s", exc)
        return 1
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if replayer is not None:
            LOGGER.info("published: %s", ", ".join(f"{k} {v}" for k, v in
                                                   sorted(replayer.counts.items())) or "nothing")
        node.destroy_node()
        if rclpy.ok():
            # uninstall_handlers=False: with SignalHandlerOptions.NO, Jazzy's rclpy would still
            # "restore" SIGINT to the default action, and a late second Ctrl-C killed it (-2).
            rclpy.shutdown(uninstall_handlers=False)
        # Ours stay until the process ends (after a signal: SIG_IGN).
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
