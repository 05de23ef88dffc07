"""The checks `colcon test` runs in an ament_python package: flake8/pep257 rules and package.xml.

ruff stands in for ament_flake8 + ament_pep257 with the same rule families (ruff.toml says which
and the two deliberate differences). package.xml is parsed and validated by catkin_pkg, the
parser rosdep, bloom and colcon use (format 3 rules: required fields, dependency names, build
type). Nothing here skips: a missing tool fails with the command that installs it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _ruff() -> str:
    here = Path(sys.executable).parent / "ruff"
    found = str(here) if here.is_file() else shutil.which("ruff")
    if found is None:
        pytest.fail("ruff not found: `make setup` installs it (pip install -e '.[dev]')", pytrace=False)
    return found


def test_ruff_ament_rules():
    res = subprocess.run([_ruff(), "check", "--no-cache", "--output-format", "concise", "."], cwd=REPO,
                         text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
    assert res.returncode == 0, f"ruff check . (rules in ruff.toml) found problems:\n{res.stdout}"


def test_package_xml_is_valid_format_3():
    from catkin_pkg.package import parse_package

    pkg = parse_package(str(REPO / "package.xml"))  # raises InvalidPackage with the reason
    pkg.validate()
    assert pkg.package_format == 3
    assert pkg.name == "pspnet_ros"
    assert pkg.get_build_type() == "ament_python"
    # setup.py and package.xml agree on what colcon and pip install.
    setup_py = (REPO / "setup.py").read_text()
    assert f'version="{pkg.version}"' in setup_py, "package.xml and setup.py versions differ"
    assert pkg.licenses and pkg.licenses[0] in setup_py
    exec_deps = {d.name for d in pkg.exec_depends}
    # Every ROS interface and library the runtime imports is declared (rosdep installs them).
    for name in ("rclpy", "sensor_msgs", "std_msgs", "diagnostic_msgs", "std_srvs", "lifecycle_msgs",
                 "rcl_interfaces", "launch", "launch_ros", "ament_index_python"):
        assert name in exec_deps, f"package.xml lacks <exec_depend>{name}</exec_depend>"
