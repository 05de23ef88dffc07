"""How long a sensor_msgs/Image waits between the middleware and a bare rclpy callback (no model).

A publisher process sends rgb8 images of each size at 10 Hz with reliable QoS; this process
subscribes with message info and reports, per size, the DDS transfer (source ->
received_timestamp) and the executor wait (received_timestamp -> callback), the share of
segmentation_node's latency that ROS 2 Python itself adds.

    .venv/bin/python benchmarks/rclpy_wait.py [--sizes 37x124,188x621,375x1242] [--seconds 10] [--raw]
    FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA .venv/bin/python benchmarks/rclpy_wait.py
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np


def publish(h: int, w: int, seconds: float, domain: int) -> None:
    import array

    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    rclpy.init(domain_id=domain)
    node = rclpy.create_node("rclpy_wait_pub")
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    pub = node.create_publisher(Image, "/rclpy_wait/image", qos)
    msg = Image(height=h, width=w, encoding="rgb8", step=w * 3)
    msg.header.frame_id = "camera"
    data = array.array("B")
    data.frombytes(np.random.default_rng(0).integers(0, 256, h * w * 3, dtype=np.uint8).tobytes())
    msg.data = data
    t0 = time.time()
    while time.time() - t0 < seconds:
        msg.header.stamp = node.get_clock().now().to_msg()
        pub.publish(msg)
        time.sleep(0.1)
    rclpy.shutdown()


def subscribe(seconds: float, domain: int, raw: bool):
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=domain)
    node = rclpy.create_node("rclpy_wait_sub", context=ctx)
    waits, transfers = [], []

    def cb(_msg, info) -> None:
        now = time.time_ns()
        waits.append((now - info["received_timestamp"]) / 1e6)
        transfers.append((info["received_timestamp"] - info["source_timestamp"]) / 1e6)

    node.create_subscription(Image, "/rclpy_wait/image", cb,
                             QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE), raw=raw)
    from rclpy.executors import SingleThreadedExecutor

    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    t0 = time.time()
    while time.time() - t0 < seconds:
        ex.spin_once(timeout_sec=0.1)
    node.destroy_node()
    ctx.try_shutdown()
    return np.asarray(waits[5:]), np.asarray(transfers[5:])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="37x124,188x621,375x1242", help="HxW list")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--raw", action="store_true", help="subscribe raw (serialized bytes, no deserialization)")
    p.add_argument("--domain", type=int, default=100 + os.getpid() % 100)
    p.add_argument("--publish", default=None, help=argparse.SUPPRESS)  # internal: HxW of the publisher
    args = p.parse_args()
    if args.publish:
        h, w = (int(v) for v in args.publish.split("x"))
        publish(h, w, args.seconds + 2.0, args.domain)
        return 0
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    print(f"FASTDDS_BUILTIN_TRANSPORTS={os.environ.get('FASTDDS_BUILTIN_TRANSPORTS', '(default)')}, "
          f"raw={args.raw}, 10 Hz reliable")
    print("| size | MB | samples | DDS transfer p50 ms | executor wait p50 ms | p95 ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for size in args.sizes.split(","):
        h, w = (int(v) for v in size.split("x"))
        pub = subprocess.Popen([sys.executable, __file__, "--publish", size, "--seconds", str(args.seconds),
                                "--domain", str(args.domain)])
        try:
            time.sleep(0.5)
            waits, transfers = subscribe(args.seconds, args.domain, args.raw)
        finally:
            pub.wait(timeout=30)
        if waits.size == 0:
            print(f"| {size} | {h * w * 3 / 1e6:.2f} | 0 | - | - | - |")
            continue
        print(f"| {size} | {h * w * 3 / 1e6:.2f} | {waits.size} | {np.median(transfers):.2f} | "
              f"{np.median(waits):.2f} | {np.percentile(waits, 95):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
