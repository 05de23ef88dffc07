"""The import rules (.importlinter): runtime and tools apart, ROS only in ros/, no cycles.

``lint-imports`` (import-linter) checks the contracts on the package; a second run on a copy with
one deliberate violation of each kind proves that every contract catches what it is there for
(the problems issue 21 found: the runtime importing the trainer, an inference<->quantize cycle
held together by lazy imports, rclpy outside ros/, the node importing the tools). Then: the node
module, imported as the node process imports it, loads no tool module.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONTRACTS = ("layers", "runtime-no-tools", "runtime-deps", "ros-only-in-ros", "node-no-harness", "acyclic")


def _lint_imports() -> str:
    here = Path(sys.executable).parent / "lint-imports"
    found = str(here) if here.is_file() else shutil.which("lint-imports")
    if found is None:
        pytest.fail("lint-imports not found: `make setup` installs it (pip install -e '.[dev]')", pytrace=False)
    return found


def _run(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([_lint_imports(), "--no-cache", "--no-logo", str(root / ".importlinter")], cwd=root,
                          env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)


def test_import_contracts_hold():
    res = _run(REPO)
    assert res.returncode == 0, f"lint-imports (contracts in .importlinter) found violations:\n{res.stdout}"
    assert f"{len(CONTRACTS)} kept, 0 broken" in res.stdout, res.stdout


def _append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + "\n\n" + text + "\n")


def test_each_contract_catches_its_violation(tmp_path):
    shutil.copytree(REPO / "pspnet_ros", tmp_path / "pspnet_ros", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / ".importlinter", tmp_path / ".importlinter")
    pkg = tmp_path / "pspnet_ros"
    # The runtime pulls the trainer (issue 21: inference/quantize.py imported training/evaluate.py).
    _append(pkg / "inference" / "int8.py", "def _check():\n    from ..tools.training import evaluate  # noqa\n")
    # A cycle held together by a lazy import (segmenter imports int8, int8 imports segmenter).
    _append(pkg / "inference" / "int8.py", "def _seg():\n    from .segmenter import Segmenter  # noqa\n")
    # rclpy outside the ros packages.
    _append(pkg / "bev.py", "import rclpy  # noqa\n")
    # The node imports a harness (ros/ importing tools).
    _append(pkg / "ros" / "conversions.py", "from ..tools.ros import node_process  # noqa\n")
    # A runtime module needs a bag-tools package.
    _append(pkg / "image_codec.py", "import rosbags  # noqa\n")
    res = _run(tmp_path)
    assert res.returncode != 0, res.stdout
    assert f"0 kept, {len(CONTRACTS)} broken" in res.stdout, res.stdout
    for needle in ("pspnet_ros.inference.int8 -> pspnet_ros.tools.training.evaluate",
                   "pspnet_ros.bev -> rclpy", "pspnet_ros.ros.conversions -> pspnet_ros.tools.ros.node_process",
                   "pspnet_ros.image_codec -> rosbags"):
        assert needle in res.stdout, f"{needle!r} not reported:\n{res.stdout}"


def test_contracts_name_every_top_level_module():
    """A new top-level module or tool gets a place in the rules (layers is exhaustive too)."""
    text = (REPO / ".importlinter").read_text()
    for contract in CONTRACTS:
        assert f"[importlinter:contract:{contract}]" in text
    top = {p.stem for p in (REPO / "pspnet_ros").iterdir()
           if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()}
    tools = {p.stem for p in (REPO / "pspnet_ros" / "tools").iterdir()
             if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()}
    for name in top - {"tools"}:
        assert f"pspnet_ros.{name}\n" in text, f"pspnet_ros.{name} is in no runtime contract of .importlinter"
    for name in tools - {"ros"}:
        assert f"pspnet_ros.tools.{name}\n" in text, f"pspnet_ros.tools.{name} is in no ROS contract of .importlinter"


def test_node_loads_no_tool_module():
    """The node module and the model stack load no tool module and no tool-only package.

    test/ros/test_faults.py checks the same inside a running node process (audit hook).
    """
    code = ("import sys; import pspnet_ros.ros.node as n; import pspnet_ros.inference.engine, "
            "pspnet_ros.inference.segmenter, pspnet_ros.ros.bev_output; "
            "print(sorted(m for m in sys.modules if m.startswith('pspnet_ros.tools') "
            "or m.split('.')[0] in ('rosbags', 'av', 'onnx', 'tensorboard')))")
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, text=True, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, timeout=300)
    assert res.returncode == 0, res.stdout
    assert res.stdout.strip().splitlines()[-1] == "[]", res.stdout
