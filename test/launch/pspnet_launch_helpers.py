"""Helpers for the launch tests: a temporary install prefix that ``ros2 run``-style lookup finds."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXECUTABLES = {  # as setup.py's console_scripts
    "segmentation_node": "pspnet_ros.ros.node",
    "replay": "pspnet_ros.tools.ros.replay",
}


def make_prefix(root: Path) -> Path:
    """Lay out ``root`` like a colcon install of pspnet_ros.

    It gets the ament index marker, the share folder (config, launch) and wrappers in lib/pspnet_ros
    that run this checkout's code.
    """
    index = root / "share" / "ament_index" / "resource_index" / "packages"
    index.mkdir(parents=True)
    (index / "pspnet_ros").write_text("")
    share = root / "share" / "pspnet_ros"
    for sub in ("config", "launch"):
        (share / sub).mkdir(parents=True)
        for f in (REPO / sub).iterdir():
            if f.is_file():
                (share / sub / f.name).write_bytes(f.read_bytes())
    lib = root / "lib" / "pspnet_ros"
    lib.mkdir(parents=True)
    for exe, module in EXECUTABLES.items():
        path = lib / exe
        path.write_text(f'#!/bin/sh\ncd "{REPO}"\nexec "{sys.executable}" -c '
                        f'"import sys; from {module} import main; sys.exit(main())" "$@"\n')
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return root


def prepend_prefix(prefix: Path) -> str:
    """Put ``prefix`` first on AMENT_PREFIX_PATH (read by ament_index_python in this process).

    Returns the previous value (or "") to restore after the test.
    """
    old = os.environ.get("AMENT_PREFIX_PATH", "")
    os.environ["AMENT_PREFIX_PATH"] = os.pathsep.join(p for p in (str(prefix), old) if p)
    return old


def restore_prefix(old: str) -> None:
    if old:
        os.environ["AMENT_PREFIX_PATH"] = old
    else:
        os.environ.pop("AMENT_PREFIX_PATH", None)
