"""``pspnet`` command: one entry point, one module per subcommand.

Every subcommand module exposes ``get_args_parser()`` and ``main(argv=None) -> int``; modules are
imported lazily so ``pspnet --help`` stays fast and ROS-only commands do not load torch.
A command whose extra is not installed fails with the pip command that installs it (:mod:`.extras`).
"""

from __future__ import annotations

import importlib
import logging
import sys
from typing import List, Optional

from .extras import missing_extra

# name: (module, help, the pip extra its packages come with)
COMMANDS = {
    "train": ("pspnet_ros.tools.training.train", "train a model from a YAML recipe", "train"),
    "eval": ("pspnet_ros.tools.training.evaluate", "evaluate a checkpoint on a dataset split", "train"),
    "infer": ("pspnet_ros.tools.infer", "segment images, folders or videos", "bags"),
    "bench": ("pspnet_ros.tools.bench", "benchmark the engine against a naive baseline", "train"),
    "export": ("pspnet_ros.tools.export", "export a checkpoint to ONNX", "train"),
    "quantize": ("pspnet_ros.tools.quantize", "make the INT8 model of a checkpoint (calibrated, accuracy-checked)",
                 "train"),
    "make-bag": ("pspnet_ros.tools.bags.make_bag", "turn image folders or videos into a rosbag2", "bags"),
    "extract-frames": ("pspnet_ros.tools.bags.extract", "sample a rosbag2's camera frames into PNGs for labelling",
                       "bags"),
    "bag": ("pspnet_ros.tools.bags.process", "segment every frame of a rosbag2 into a new bag", "bags"),
    "replay": ("pspnet_ros.tools.ros.replay", "publish a bag's images over ROS 2 (ros2 bag play stand-in)", "bags"),
    "soak": ("pspnet_ros.tools.ros.soak", "run the node under a 30 Hz publisher and track RSS/latency", "bags"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: pspnet COMMAND [options]   (pspnet COMMAND --help for details)", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_, _) in COMMANDS.items()]
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
    module_name, _, extra = COMMANDS[cmd]
    try:
        module = importlib.import_module(module_name)
        return int(module.main(rest) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except ImportError as exc:  # a tool package of an extra that is not installed: say which
        err = missing_extra(exc, f"pspnet {cmd}", extra)
        if err is None:
            raise
        print(f"pspnet: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
