"""``pspnet`` command: one entry point, one module per subcommand.

Every subcommand module exposes ``get_args_parser()`` and ``main(argv=None) -> int``; modules are
imported lazily so ``pspnet --help`` stays fast and ROS-only commands do not load torch.
"""

from __future__ import annotations

import importlib
import logging
import sys
from typing import List, Optional

COMMANDS = {
    "train": ("pspnet_ros.training.train", "train a model from a YAML recipe"),
    "eval": ("pspnet_ros.training.evaluate", "evaluate a checkpoint on a dataset split"),
    "infer": ("pspnet_ros.inference.infer_cli", "segment images, folders or videos"),
    "bench": ("pspnet_ros.inference.bench", "benchmark the engine against a naive baseline"),
    "export": ("pspnet_ros.inference.export", "export a checkpoint to ONNX"),
    "quantize": ("pspnet_ros.inference.quantize", "make the INT8 model of a checkpoint (calibrated, accuracy-checked)"),
    "make-bag": ("pspnet_ros.bags.make_bag", "turn image folders or videos into a rosbag2"),
    "bag": ("pspnet_ros.bags.process", "segment every frame of a rosbag2 into a new bag"),
    "replay": ("pspnet_ros.ros.replay", "publish a bag's images over ROS 2 (ros2 bag play stand-in)"),
    "soak": ("pspnet_ros.ros.soak", "run the node under a 30 Hz publisher and track RSS/latency"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: pspnet COMMAND [options]   (pspnet COMMAND --help for details)", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def configure_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    if cmd not in COMMANDS:
        print(f"pspnet: unknown command {cmd!r}\n\n{usage()}", file=sys.stderr)
        return 2
    configure_logging("-v" in rest or "--verbose" in rest)
    module = importlib.import_module(COMMANDS[cmd][0])
    try:
        return int(module.main(rest) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
