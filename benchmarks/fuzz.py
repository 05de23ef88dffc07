"""Fuzz segmentation_node with mutated Image / CompressedImage / CameraInfo; watch its memory.

Long mode (issue 24): the node runs on its defaults as its own process on a private domain;
mutants from :mod:`fuzz_mutations` go to it through a reliable publisher, a valid frame after
every 25 mutants, and each valid frame must be answered on ``segmentation/labels`` before the
next mutant is sent. The node's resident memory (VmRSS of /proc/<pid>/status) is sampled; the
table gives mutants sent, good frames answered, RSS after warm-up (the first 5,000 mutants) and
at the end, and the drop reasons by kind (from the node's throttled "dropped frame" log lines:
each line stands for itself plus the "N more like it" it reports).

    .venv/bin/python benchmarks/fuzz.py --mutants 100000 --transport raw compressed --seed 1

``--lifecycle N`` fuzzes the managed node instead (``segmentation_lifecycle_node``), configured and
activated through its ``change_state`` service, then deactivated and activated again every N
mutants while the mutants keep coming (each cycle is followed by a good frame that must be
answered before the count goes on; it is not counted).

The short mode is test/ros/test_fuzz.py (same driver, fewer mutants).
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import fuzz_mutations as fm  # noqa: E402

GOOD_EVERY = 25
WARMUP_MUTANTS = 5000
GOOD_SEC0 = 1_500_000_000  # good-frame stamps: apart from every mutant's (fuzz_mutations._header)
_DROPPED = re.compile(r"dropped frame \(stamp [^)]*\): (.*?)(?: \((\d+) more like it since the last such line\))?$")


def rss_kb(pid: int) -> int:
    """VmRSS of ``pid`` in kB (0 when the process is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


_DETAIL = re.compile(r":|;| \(| for | got |, more than")


def reason_kind(message: str) -> str:
    """Return a coarse kind for a drop message: its text before the details, numbers and names blanked.

    ``"step 19 is smaller than width*bytes_per_pixel = 10000*1 = 10000 for mono8"`` ->
    ``"step # is smaller than width*bytes_per_pixel = #*# = #"``.
    """
    from pspnet_ros.ros.log_throttle import problem_kind

    return _DETAIL.split(problem_kind(message, 200), maxsplit=1)[0].strip()[:60]


def drop_reasons(log_text: str) -> Dict[str, int]:
    """Frames dropped per kind of problem, from the node's throttled warnings.

    Each line stands for itself and the "N more like it" it reports; what was suppressed after
    the last line of a kind is not in the log yet (the table shows it as the difference to the
    bad-input total of /diagnostics).
    """
    counts: Dict[str, int] = collections.Counter()
    for line in log_text.splitlines():
        m = _DROPPED.search(line)
        if m:
            counts[reason_kind(m.group(1))] += 1 + int(m.group(2) or 0)
    return dict(counts)


class FuzzDriver:
    """Sends mutants and good frames to a node through ``ros_node`` (a client rclpy node, spun elsewhere).

    ``transport``: "raw" (Image on ``image``) or "compressed" (CompressedImage on
    ``image/compressed``). A CameraInfo mutant goes with every fourth mutant; a valid camera_info
    precedes each good frame, so the node's camera_info path runs both ways.
    """

    def __init__(self, ros_node: Any, transport: str, pid: int, *, seed: int = 1, good_every: int = GOOD_EVERY,
                 answer_timeout: float = 60.0, pace_s: float = 0.0005, namespace: str = "") -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image

        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.transport, self.pid, self.seed = transport, pid, seed
        self.good_every, self.answer_timeout, self.pace_s = good_every, answer_timeout, pace_s
        prefix = f"{namespace}/" if namespace else "/"
        self.compressed = transport == "compressed"
        self.image_pub = ros_node.create_publisher(CompressedImage if self.compressed else Image,
                                                   prefix + ("image/compressed" if self.compressed else "image"),
                                                   reliable)
        self.info_pub = ros_node.create_publisher(CameraInfo, prefix + "camera_info", reliable)
        self._cond = threading.Condition()
        self._answered: set = set()
        self.outputs = 0
        self.diag: Dict[str, str] = {}
        self._subs = [ros_node.create_subscription(Image, prefix + "segmentation/labels", self._on_labels, reliable),
                      ros_node.create_subscription(CameraInfo, prefix + "segmentation/camera_info",
                                                   lambda m: None, reliable),
                      ros_node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)]
        self.sent = 0
        self.good_sent = 0
        self.good_answered = 0
        self.unanswered: List[int] = []
        self.unanswered_at: List[Tuple[int, int, float]] = []  # (good frame, mutants sent, wall time)
        self.kinds: Dict[str, int] = collections.Counter()
        self.rss: List[Tuple[int, int]] = []  # (mutants sent, VmRSS kB)
        self.publish_failures = 0  # our own writer's publish() refused (see _publish); counted, reported

    def _publish(self, pub: Any, msg: Any) -> None:
        """Publish; where Fast DDS refuses the write, count it and send the same message again.

        A reliable keep-last writer in rmw_fastrtps' synchronous mode can refuse a write ("cannot
        publish data") when every payload of its pool (depth + 1) is still referenced, e.g. by a
        retransmission in flight (eProsima/Fast-DDS#6361); this fuzzer writes flat out, a camera
        driver at its frame rate rarely meets it. Seen once in ~140,000 messages here (2026-12-07).
        Retried up to 5 times, 1 ms apart; the count is in the table; a sixth refusal raises.
        """
        for attempt in range(6):
            try:
                pub.publish(msg)
                return
            except Exception as exc:  # noqa: BLE001 (rclpy's RCLError has no public import)
                if "cannot publish data" not in str(exc) or attempt == 5:
                    raise
                self.publish_failures += 1
                time.sleep(0.001)

    def _on_labels(self, msg: Any) -> None:
        with self._cond:
            self.outputs += 1
            if msg.header.frame_id == "fuzz_good":
                self._answered.add(msg.header.stamp.sec)
                self._cond.notify_all()

    def _on_diag(self, msg: Any) -> None:
        for st in msg.status:
            values = {kv.key: kv.value for kv in st.values}
            if "received (total)" in values:
                self.diag = values

    def wait_subscribed(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while self.image_pub.get_subscription_count() == 0 or self._subs[0].get_publisher_count() == 0:
            if time.monotonic() > deadline:
                raise AssertionError(f"the node did not match {self.image_pub.topic_name} within {timeout} s")
            time.sleep(0.05)

    def _good_info(self, sec: int) -> Any:
        _, f = fm.camera_info_fields(self.seed, 0, 96, 320)
        f.update(height=96, width=320, distortion_model="plumb_bob", d=[0.0] * 5, binning_x=0, binning_y=0,
                 roi=(0, 0, 0, 0, False), header={"sec": sec, "nanosec": 0, "frame_id": "fuzz_good"})
        f["k"] = [500.0, 0.0, 160.0, 0.0, 500.0, 48.0, 0.0, 0.0, 1.0]
        f["p"] = [500.0, 0.0, 160.0, 0.0, 0.0, 500.0, 48.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        return fm.camera_info_msg(f)

    def good(self, timeout: Optional[float] = None, fields: Optional[Dict[str, Any]] = None) -> bool:
        """Send one valid frame (``fields``: fuzz_mutations fields, else the usual good frame) and wait for its labels.

        Returns True when answered.
        """
        k = self.good_sent
        self.good_sent += 1
        sec = GOOD_SEC0 + k
        self._publish(self.info_pub, self._good_info(sec))
        stamp = sec * 1_000_000_000
        if fields is not None:
            fields = dict(fields, header={"sec": sec, "nanosec": 0, "frame_id": "fuzz_good"})
            self._publish(self.image_pub, fm.compressed_msg(fields) if self.compressed else fm.image_msg(fields))
        else:
            self._publish(self.image_pub, fm.good_compressed_msg(k, stamp) if self.compressed
                          else fm.good_image_msg(k, stamp))
        deadline = time.monotonic() + (timeout or self.answer_timeout)
        with self._cond:
            while sec not in self._answered:
                left = deadline - time.monotonic()
                if left <= 0:
                    self.unanswered.append(k)
                    self.unanswered_at.append((k, self.sent, round(time.time(), 3)))
                    return False
                self._cond.wait(left)
            self._answered.discard(sec)
        self.good_answered += 1
        return True

    def sync(self, timeout: float = 120.0) -> None:
        """Send good frames until one is answered (after discovery or a re-subscription); not counted."""
        sent, answered = self.good_sent, self.good_answered
        deadline = time.monotonic() + timeout
        while not self.good(timeout=2.0):
            if time.monotonic() > deadline:
                raise AssertionError(f"no answer to a good frame within {timeout} s")
        self.good_sent, self.good_answered = sent, answered
        self.unanswered = [k for k in self.unanswered if k < sent]
        self.unanswered_at = [u for u in self.unanswered_at if u[0] < sent]

    def warm_largest(self, timeout: float = 120.0) -> None:
        """Have the node process the largest valid frames the mutants can hold (not counted).

        One large frame costs the node a working set (decoded frame, logits upsampled to it,
        outputs) that the allocator keeps as its high-water mark; sent first, it is part of the
        warm-up instead of a step in the middle of the measurement.
        """
        sent, answered = self.good_sent, self.good_answered
        for f in fm.largest_fields(self.transport):
            if not self.good(timeout=timeout, fields=f):
                raise AssertionError(f"the node did not answer a {self.transport} frame of the largest size "
                                     f"within {timeout} s")
        self.good_sent, self.good_answered = sent, answered

    def mutant(self) -> None:
        i = self.sent
        if self.compressed:
            kind, f = fm.compressed_fields(self.seed, i)
            self._publish(self.image_pub, fm.compressed_msg(f))
        else:
            kind, f = fm.image_fields(self.seed, i)
            self._publish(self.image_pub, fm.image_msg(f))
        self.kinds[kind] += 1
        if i % 4 == 0:
            _, info = fm.camera_info_fields(self.seed, i, 96, 320)
            self._publish(self.info_pub, fm.camera_info_msg(info))
        self.sent += 1
        if self.pace_s:
            time.sleep(self.pace_s)

    def run(self, mutants: int, *, sample_every: int = 1000, between: Optional[Callable[[int], None]] = None,
            progress: Optional[Callable[["FuzzDriver"], None]] = None, alive: Callable[[], bool] = lambda: True
            ) -> None:
        """Send ``mutants`` mutants, a good frame after every ``good_every``; sample RSS every ``sample_every``.

        ``between(sent)`` runs after each good frame (the lifecycle test changes states there).
        Stops early when ``alive()`` turns false.
        """
        end = self.sent + mutants
        while self.sent < end:
            for _ in range(min(self.good_every, end - self.sent)):
                self.mutant()
            self.good()
            if not alive():
                return
            if between is not None:
                between(self.sent)
            if self.sent % sample_every < self.good_every or self.sent == end:
                self.rss.append((self.sent, rss_kb(self.pid)))
                if progress is not None:
                    progress(self)

    def late(self) -> List[int]:
        """Good frames answered after their timeout (not lost: late)."""
        with self._cond:
            return [k for k in self.unanswered if GOOD_SEC0 + k in self._answered]

    def rss_at(self, mutants: int) -> int:
        """RSS (kB) at the first sample taken at or after ``mutants`` mutants."""
        for n, kb in self.rss:
            if n >= mutants:
                return kb
        return self.rss[-1][1] if self.rss else 0


def table(rows: Sequence[Dict[str, Any]]) -> str:
    head = ("node", "transport", "mutants", "good answered", "RSS warm-up MB", "RSS end MB", "growth %", "RSS max MB",
            "received", "processed", "bad input", "failed", "lost", "publish refused")
    lines = [" | ".join(head), " | ".join("-" * len(h) for h in head)]
    for r in rows:
        lines.append(" | ".join(str(r[k]) for k in head))
    return "\n".join(lines)


def summary(d: FuzzDriver, warmup: int) -> Dict[str, Any]:
    w, e = d.rss_at(warmup) / 1024, (d.rss[-1][1] if d.rss else 0) / 1024
    return {"node": "plain", "transport": d.transport, "mutants": d.sent,
            "good answered": f"{d.good_answered}/{d.good_sent}",
            "RSS warm-up MB": f"{w:.1f}", "RSS end MB": f"{e:.1f}",
            "growth %": f"{100 * (e - w) / w:+.2f}" if w else "n/a",
            "RSS max MB": f"{max((kb for n, kb in d.rss if n >= warmup), default=0) / 1024:.1f}",
            "received": d.diag.get("received (total)", "?"), "processed": d.diag.get("processed (total)", "?"),
            "bad input": d.diag.get("bad input (total)", "?"), "failed": d.diag.get("failed (total)", "?"),
            "lost": d.diag.get("lost before the node (total)", "?"), "publish refused": d.publish_failures}


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mutants", type=int, default=100_000, help="mutants per transport")
    p.add_argument("--transport", nargs="+", default=["raw", "compressed"], choices=["raw", "compressed"])
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--warmup", type=int, default=WARMUP_MUTANTS, help="mutants before the reference RSS")
    p.add_argument("--sample-every", type=int, default=1000, help="RSS sample (and progress line) every N mutants")
    p.add_argument("--domain", type=int, default=None, help="ROS domain (default: a private one)")
    p.add_argument("--params", nargs="*", default=[], metavar="NAME:=VALUE",
                   help="node parameters (default: the node's defaults)")
    p.add_argument("--lifecycle", type=int, default=0, metavar="N",
                   help="fuzz the managed node, deactivated and activated again every N mutants (0: the plain node)")
    return p


def run_transport(args: argparse.Namespace, transport: str, domain: int,
                  tmp: Path) -> Tuple[Dict[str, Any], Dict[str, int]]:
    import rclpy
    import yaml
    from rclpy.executors import SingleThreadedExecutor

    from pspnet_ros.tools.ros.node_process import NodeProcess, node_env, write_params

    params: Dict[str, Any] = {"input_transport": transport}
    for item in args.params:
        name, _, value = item.partition(":=")
        params[name] = yaml.safe_load(value)
    pfile = write_params(tmp / f"{transport}.yaml", params)
    node = NodeProcess(pfile, tmp / f"{transport}.log", node_env(domain), cwd=REPO, lifecycle=args.lifecycle > 0)
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=domain)
    client = rclpy.create_node(f"fuzz_{transport}", context=ctx)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(client)

    def spin() -> None:
        while ctx.ok():
            try:
                executor.spin_once(timeout_sec=0.05)
            except Exception:  # noqa: BLE001 (the context shut down while spinning)
                return

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    t0 = time.monotonic()
    cycles = [0]
    try:
        between = None
        if args.lifecycle > 0:
            change = _lifecycle_client(client, node)
            change("configure")
            change("activate")
        d = FuzzDriver(client, transport, node.pid, seed=args.seed)
        if args.lifecycle > 0:
            def between(sent: int) -> None:
                if sent % args.lifecycle < d.good_every:
                    change("deactivate")
                    change("activate")
                    cycles[0] += 1
                    d.sync()  # the new subscription must match before the next good frame counts
        d.wait_subscribed()
        d.sync()  # discovery both ways: the first good frames may find no match yet
        d.warm_largest()

        def progress(dr: FuzzDriver) -> None:
            print(f"[{transport}] {dr.sent} mutants, {dr.good_answered}/{dr.good_sent} good answered, "
                  f"RSS {dr.rss[-1][1] / 1024:.1f} MB, {time.monotonic() - t0:.0f} s", flush=True)

        d.run(args.mutants, sample_every=args.sample_every, progress=progress, alive=node.alive, between=between)
        time.sleep(6.0)  # one more diagnostics period for the totals
        row = summary(d, args.warmup)
        if args.lifecycle > 0:
            row["node"] = f"lifecycle ({cycles[0]} deactivate/activate)"
        row["alive"] = node.alive()
        if d.unanswered_at:
            print(f"[{transport}] unanswered good frames (frame, mutants sent, time): {d.unanswered_at}; "
                  f"answered late: {d.late()}", flush=True)
        row["seconds"] = round(time.monotonic() - t0)
        return row, drop_reasons(node.output())
    finally:
        node.stop()
        ctx.try_shutdown()
        thread.join(5)


def _lifecycle_client(client: Any, node: Any, timeout: float = 180.0) -> Callable[[str], None]:
    """Return ``change(label)``: one transition of the managed node; raises when it is refused or unanswered."""
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState

    ids = {"configure": Transition.TRANSITION_CONFIGURE, "activate": Transition.TRANSITION_ACTIVATE,
           "deactivate": Transition.TRANSITION_DEACTIVATE}
    cli = client.create_client(ChangeState, "/segmentation_node/change_state")
    if not cli.wait_for_service(timeout_sec=timeout):
        raise RuntimeError(f"no /segmentation_node/change_state within {timeout} s:\n{node.log_tail()}")

    def change(label: str) -> None:
        req = ChangeState.Request()
        req.transition.id = ids[label]
        future = cli.call_async(req)  # answered on the spin thread
        deadline = time.monotonic() + timeout
        while not future.done():
            if time.monotonic() > deadline or not node.alive():
                raise RuntimeError(f"{label}: no answer within {timeout} s (node alive: {node.alive()}):\n"
                                   f"{node.log_tail()}")
            time.sleep(0.02)
        if not future.result().success:
            raise RuntimeError(f"{label} refused:\n{node.log_tail()}")

    return change


def main(argv: Optional[List[str]] = None) -> int:
    args = get_args_parser().parse_args(argv)
    from pspnet_ros.tools.ros.node_process import private_domain

    domain = args.domain if args.domain is not None else private_domain()
    tmp = Path(tempfile.mkdtemp(prefix="pspnet_fuzz_"))
    print(f"domain {domain}, logs in {tmp}, seed {args.seed}, {args.mutants} mutants per transport, "
          f"a good frame after every {GOOD_EVERY}", flush=True)
    rows, reasons = [], {}
    for transport in args.transport:
        row, drops = run_transport(args, transport, domain, tmp)
        rows.append(row)
        reasons[transport] = drops
        print(table([row]), flush=True)
    print()
    print(table(rows))
    for row in rows:
        drops = reasons[row["transport"]]
        print(f"\ndrop reasons by kind ({row['transport']}; from the node's log):")
        for kind, n in sorted(drops.items(), key=lambda kv: -kv[1]):
            print(f"  {n:8d}  {kind}")
        try:
            print(f"  {int(row['bad input']) - sum(drops.values()):8d}  (suppressed after the last line of "
                  "their kind: not in the log yet)")
        except ValueError:
            pass
    ok = all(r["alive"] and r["good answered"].split("/")[0] == r["good answered"].split("/")[1] for r in rows)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
