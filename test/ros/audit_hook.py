"""A ``sitecustomize`` for node processes under test.

It records what the process does that a perception node must not do on its own (write files, open
network connections, start programs, unpickle with the unrestricted unpickler), and which
pspnet_ros modules it imports (the node must load no tool module).

``install(tmp)`` writes the module into ``tmp/audit_site`` and returns the environment to add
(``PYTHONPATH`` to that folder and ``PSPNET_AUDIT_LOG``). Python's audit hooks
(:func:`sys.addaudithook`) see every ``open()``, ``os.*`` file operation, socket call,
``subprocess``/``os.system`` and ``pickle.find_class`` made from Python code, from the first
import on. C/C++ code (Fast DDS, rcl logging) is not seen: those write only under their own
well-known locations, never to a path given as a parameter; the tests also compare snapshots of
the directories that parameters point to.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Tuple

SITECUSTOMIZE = r"""
import os, sys

_path = os.environ.get("PSPNET_AUDIT_LOG")
if _path:
    _log = open(_path, "a", buffering=1)
    _WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    _FILE_EVENTS = {"os.mkdir", "os.rename", "os.replace", "os.remove", "os.rmdir", "os.truncate",
                    "os.chmod", "os.chown", "os.utime", "os.symlink", "os.link", "shutil.copyfile",
                    "shutil.copymode", "shutil.move", "shutil.rmtree", "tempfile.mkstemp",
                    "tempfile.mkdtemp"}
    _NET_EVENTS = {"socket.connect", "socket.bind", "socket.getaddrinfo", "socket.sendto",
                   "socket.gethostbyname", "urllib.Request", "http.client.connect",
                   "ftplib.connect", "smtplib.connect", "webbrowser.open"}
    _EXEC_EVENTS = {"subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn",
                    "os.fork"}

    def _hook(event, args):
        if event == "open":
            path, mode, flags = args
            if isinstance(path, int):
                return
            writing = (any(c in mode for c in "wax+") if isinstance(mode, str)
                       else bool((flags or 0) & _WRITE_FLAGS))
            if writing:
                _log.write(f"write\t{os.fsdecode(path)}\n")
        elif event in _FILE_EVENTS:
            _log.write(f"file\t{event}\t{args!r:.300}\n")
        elif event in _NET_EVENTS:
            _log.write(f"net\t{event}\t{args!r:.300}\n")
        elif event in _EXEC_EVENTS:
            _log.write(f"exec\t{event}\t{args!r:.300}\n")
        elif event == "pickle.find_class":
            _log.write(f"unpickle\t{args!r:.300}\n")
        elif event == "import" and str(args[0]).startswith("pspnet_ros"):
            _log.write(f"import\t{args[0]}\n")

    sys.addaudithook(_hook)
"""


def install(tmp: Path, name: str = "audit") -> Tuple[Dict[str, str], Path]:
    site = tmp / "audit_site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    log = tmp / f"{name}.audit"
    log.write_text("")
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, "PSPNET_AUDIT_LOG": str(log)}, log


def events(log: Path) -> List[List[str]]:
    return [line.split("\t") for line in log.read_text().splitlines() if line]


def snapshot(folder: Path) -> Dict[str, Tuple[int, int, int]]:
    """Name -> (size, mtime_ns, mode) of everything under ``folder``, the folder itself included."""
    out = {".": (0, folder.stat().st_mtime_ns, folder.stat().st_mode)}
    for p in sorted(folder.rglob("*")):
        st = p.stat()
        out[str(p.relative_to(folder))] = (st.st_size, st.st_mtime_ns, st.st_mode)
    return out
