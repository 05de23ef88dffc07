"""Whether the middleware, as configured, carries large best-effort frames; the setting if not.

ROS-free: the node passes its RMW identifier and environment, and says the result in its log
and /diagnostics when it subscribes best effort.

Measured on one host (a best-effort 375x1242 rgb8 Image at 10 Hz into a keep-last-1 best-effort
subscription, 30 frames; see README troubleshooting):

* Fast DDS 3 (Kilted), default transports: 0 of 30; ``FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA``: 30.
* Fast DDS 2.14 (Jazzy), default transports: 13-15 of 30 (every other frame lost), plain
  ``LARGE_DATA``: 11-14; ``LARGE_DATA?max_msg_size=4MB&sockets_size=4MB``: every frame once
  the TCP/SHM data path is up (the first 4-5 frames after matching are lost, also at 1920x1080).

So one setting serves both: :data:`LARGE_FRAMES_SETTING`, in the environment of the node and of
the camera driver (both sides choose their transports). A Fast DDS XML profile (with a large SHM
``segment_size``) works too; with one set, the node cannot tell and says nothing.
"""

from __future__ import annotations

import os
import re
from importlib import metadata
from pathlib import Path
from typing import Mapping, Optional, Tuple

from .middleware import PROFILE_PREFIX, PROFILE_VARS

TRANSPORTS_VAR = "FASTDDS_BUILTIN_TRANSPORTS"
LARGE_FRAMES_VALUE = "LARGE_DATA?max_msg_size=4MB&sockets_size=4MB"
LARGE_FRAMES_SETTING = f"{TRANSPORTS_VAR}={LARGE_FRAMES_VALUE}"


def fastdds_version(env: Optional[Mapping[str, str]] = None) -> Optional[Tuple[int, ...]]:
    """Return the installed Fast DDS version, or None when it cannot be found.

    Wheel installs carry it as a distribution (``ros-fastrtps`` 2.x for Jazzy, ``ros-fastdds``
    3.x for Kilted); ROS installs in the ament index (package ``fastrtps`` or ``fastdds``).
    """
    for dist in ("ros-fastdds", "ros-fastrtps"):
        try:
            return _parse(metadata.version(dist))
        except metadata.PackageNotFoundError:
            continue
    env = os.environ if env is None else env
    for prefix in filter(None, env.get("AMENT_PREFIX_PATH", "").split(os.pathsep)):
        for pkg in ("fastdds", "fastrtps"):
            xml = Path(prefix) / "share" / pkg / "package.xml"
            if xml.is_file():
                m = re.search(r"<version>([^<]+)</version>", xml.read_text(errors="replace"))
                if m:
                    return _parse(m.group(1))
    return None


def _parse(text: str) -> Optional[Tuple[int, ...]]:
    parts = re.findall(r"\d+", text)[:3]
    return tuple(int(p) for p in parts) if parts else None


def large_best_effort_hint(rmw_identifier: str, env: Optional[Mapping[str, str]] = None,
                           version: Optional[Tuple[int, ...]] = None) -> str:
    """Return the setting large best-effort frames need here, as one sentence, or "".

    Empty when they get through as configured (or when it cannot be told).

    ``version``: the Fast DDS version (default: :func:`fastdds_version`).
    """
    if not rmw_identifier.startswith("rmw_fastrtps"):
        return ""
    env = os.environ if env is None else env
    # The node's own profile (middleware.py: memory policies, no transports) is not the user's.
    if any(env.get(v) and not Path(env[v]).name.startswith(PROFILE_PREFIX) for v in PROFILE_VARS):
        return ""  # the user's own XML profile may configure transports: not ours to judge
    value = env.get(TRANSPORTS_VAR, "")
    version = fastdds_version(env) if version is None else version
    major = version[0] if version else None
    if value.upper().startswith("LARGE_DATA"):
        if major is not None and major >= 3:
            return ""
        if "max_msg_size" in value and "sockets_size" in value:
            return ""
    fast_dds = "Fast DDS " + ".".join(map(str, version)) if version else "Fast DDS"
    now = f"{TRANSPORTS_VAR}={value}" if value else f"{TRANSPORTS_VAR} unset"
    return (f"large best-effort frames are lost with {fast_dds} as configured ({now}): set "
            f"{LARGE_FRAMES_SETTING} for this node and the camera driver (see README troubleshooting)")
