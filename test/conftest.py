"""Shared fixtures: tiny checkpoints, real frames from the shared datasets, thread limits."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

# Tests share 2 cores with each other and with DDS threads; one intra-op thread keeps them
# predictable. Set before torch is imported anywhere.
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]

from pspnet_test_helpers import make_tiny_checkpoint  # noqa: E402  (re-exported for fixtures)


def _restore_environment(before: dict, what: str) -> None:
    """Put ``os.environ`` back to ``before``; fail naming what ``what`` changed, if anything."""
    after = dict(os.environ)
    changed = sorted(k for k in set(before) | set(after)
                     if before.get(k) != after.get(k) and k != "PYTEST_CURRENT_TEST")  # pytest's own
    if not changed:
        return
    for k in changed:
        if k in before:
            os.environ[k] = before[k]
        else:
            os.environ.pop(k, None)
    pytest.fail(f"{what} left the process environment changed: {', '.join(changed)} "
                "(restored; use monkeypatch.setenv/delenv)", pytrace=False)


@pytest.fixture(autouse=True)
def _environment_unchanged():
    """Fail a test that leaves the process environment changed, and put it back.

    Every process a later test starts inherits ``os.environ``: a leaked Fast DDS profile
    (``FASTDDS_DEFAULT_PROFILES_FILE`` + ``RMW_FASTRTPS_USE_QOS_FROM_XML``, once set by
    test_input_depth through ``configure_fastdds(os.environ)``) ran every later node, ros2 CLI
    call and test client of the session with it, and on Jazzy's Fast DDS 2.14 their service calls
    then went unanswered. Use ``monkeypatch.setenv``/``delenv``, which undo themselves.
    """
    before = dict(os.environ)
    yield
    _restore_environment(before, "the test")


@pytest.fixture(autouse=True, scope="module")
def _module_environment_unchanged():
    """Fail a module whose fixtures leave the process environment changed (checked after its teardown)."""
    before = dict(os.environ)
    yield
    _restore_environment(before, "the module's fixtures")


@pytest.fixture(scope="session")
def data_root() -> Path:
    from pspnet_ros.paths import data_root as _root

    root = _root()
    if not (root / "kitti_road" / "image_2").is_dir():
        pytest.fail(f"datasets not found at {root} (set PSPNET_DATA_ROOT)")
    return root


@pytest.fixture(scope="session")
def kitti_frames(data_root):
    """Three real KITTI road val frames as (stem, RGB uint8 HxWx3)."""
    from PIL import Image

    stems = (data_root / "kitti_road" / "val.txt").read_text().split()[:3]
    return [(s, np.asarray(Image.open(data_root / "kitti_road" / "image_2" / f"{s}.jpg").convert("RGB")))
            for s in stems]


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny_kitti.pt")
