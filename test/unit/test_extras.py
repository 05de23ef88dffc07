"""A tool whose pip extra is not installed says which command installs it (issue 21).

The missing package is simulated with ``sys.modules[name] = None``, which makes ``import name``
raise ModuleNotFoundError as if it were not installed.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from pspnet_ros.tools import cli, extras


def _uninstall(monkeypatch, name: str) -> None:
    for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
        monkeypatch.delitem(sys.modules, key)
    monkeypatch.setitem(sys.modules, name, None)


def test_require_names_the_extra(monkeypatch):
    _uninstall(monkeypatch, "tensorboard")
    with pytest.raises(extras.MissingExtra,
                       match=r"pspnet train needs .*'tensorboard'.*pip install 'pspnet_ros\[train\]'"):
        extras.require("tensorboard", "pspnet train")
    assert extras.require("json", "anything").dumps(1) == "1"  # installed: the module itself


def test_missing_extra_ignores_other_import_errors():
    assert extras.missing_extra(ModuleNotFoundError("x", name="no_such_package"), "pspnet bag") is None
    assert extras.missing_extra(ImportError("cannot import name 'x'", name="rosbags"), "pspnet bag") is None
    err = extras.missing_extra(ModuleNotFoundError("x", name="rosbags.rosbag2"), "pspnet bag", "bags")
    assert "'rosbags'" in str(err) and "pip install 'pspnet_ros[bags]'" in str(err)


def test_every_command_names_a_declared_extra():
    setup_py = (Path(__file__).resolve().parents[2] / "setup.py").read_text()
    for name, (_module, _help, extra) in cli.COMMANDS.items():
        assert re.search(rf'"{extra}": \[', setup_py), f"pspnet {name}: extra {extra!r} is not in setup.py"
    for module, extra in extras.EXTRA_OF.items():
        assert re.search(rf'"{extra}": \[', setup_py), f"{module}: extra {extra!r} is not in setup.py"


def test_cli_without_rosbags_names_pip_install_bags(monkeypatch, capsys, tmp_path):
    _uninstall(monkeypatch, "rosbags")
    sample = tmp_path / "frames"
    sample.mkdir()
    cv2.imwrite(str(sample / "000000.png"), np.zeros((8, 8, 3), np.uint8))
    rc = cli.main(["make-bag", str(sample), "--out", str(tmp_path / "bag")])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "pspnet make-bag needs the Python package 'rosbags'" in err
    assert "pip install 'pspnet_ros[bags]'" in err
    assert not (tmp_path / "bag").exists()
