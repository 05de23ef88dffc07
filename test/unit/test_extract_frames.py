"""`pspnet extract-frames`: real rosbag2 files from `pspnet make-bag` (and rosbags) -> PNG + camera_info YAML."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from pspnet_ros.tools.bags import calibration, extract, make_bag, messages, storage

START = 1_700_000_000.25
START_NS = int(round(START * 1e9))  # as make-bag turns --start-time into a stamp


@pytest.fixture()
def frames_dir(tmp_path) -> Path:
    """Six distinct 24x40 PNG frames."""
    d = tmp_path / "frames"
    d.mkdir()
    rng = np.random.default_rng(1)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)).save(d / f"f{i}.png")
    return d


def make(frames_dir: Path, out: Path, *extra: str) -> Path:
    assert make_bag.main([str(frames_dir), "--out", str(out), "--rate", "10", "--start-time", str(START),
                          "--no-progress", *extra]) == 0
    return out


def stem(i: int, rate: float = 10.0) -> str:
    return extract.frame_stem(messages.stamp_ns(START_NS, i, rate))


def test_every_nth_raw_frame_lossless_with_its_camera_info(frames_dir, tmp_path, capsys):
    bag = make(frames_dir, tmp_path / "bag")
    out = tmp_path / "out"
    assert extract.main([str(bag), "--out", str(out), "--every", "2"]) == 0
    assert "wrote 3 of 6 frames of /camera/image_raw" in capsys.readouterr().out
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(f"{stem(i)}.{ext}" for i in (0, 2, 4) for ext in ("png", "yaml"))
    assert stem(2).startswith("1700000000_4") and len(stem(2)) == 20
    for i in (0, 2, 4):
        with Image.open(out / f"{stem(i)}.png") as a, Image.open(frames_dir / f"f{i}.png") as b:
            assert np.array_equal(np.asarray(a), np.asarray(b))
    # The camera_calibration YAML reads back into the same camera (the bag's default 60 deg pinhole),
    # with make-bag's own reader.
    intr = make_bag.load_calibration_yaml(out / f"{stem(2)}.yaml")
    want = calibration.default_intrinsics(40, 24)
    assert (intr.width, intr.height) == (40, 24)
    assert (intr.fx, intr.fy, intr.cx, intr.cy) == pytest.approx((want.fx, want.fy, want.cx, want.cy))
    doc = yaml.safe_load((out / f"{stem(2)}.yaml").read_text())
    assert doc["camera_matrix"]["rows"] == 3 and doc["distortion_model"] == "plumb_bob"
    assert len(doc["projection_matrix"]["data"]) == 12 and len(doc["rectification_matrix"]["data"]) == 9


def test_rate_and_compressed_frames(frames_dir, tmp_path, capsys):
    bag = make(frames_dir, tmp_path / "bag", "--compressed", "--format", "sqlite3")
    out = tmp_path / "out"
    assert extract.main([str(bag), "--out", str(out), "--rate", "4"]) == 0  # >= 0.25 s apart at 10 Hz
    assert "of /camera/image_raw/compressed" in capsys.readouterr().out
    pngs = sorted(out.glob("*.png"))
    assert [p.stem for p in pngs] == [stem(0), stem(3)]
    # The bag holds make-bag's JPEG of f3 (quality 90): the PNG is that JPEG decoded, without a second loss.
    import io

    jpeg = make_bag.Frame(name="f3", path=frames_dir / "f3.png").jpeg(90)
    with Image.open(pngs[1]) as a, Image.open(io.BytesIO(jpeg)) as b:
        assert a.size == b.size == (40, 24)
        assert np.abs(np.asarray(a, np.int16) - np.asarray(b.convert("RGB"), np.int16)).mean() < 2
    assert (out / f"{stem(3)}.yaml").is_file()  # camera_info of the compressed topic's base topic


def test_no_camera_info_and_limit(frames_dir, tmp_path, capsys):
    bag = make(frames_dir, tmp_path / "bag", "--camera-info", "none")
    out = tmp_path / "out"
    assert extract.main([str(bag), "--out", str(out), "--limit", "2"]) == 0
    assert "no camera_info (/camera/camera_info not in the bag)" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == [f"{stem(0)}.png", f"{stem(1)}.png"]


def write_two_camera_bag(path: Path) -> Path:
    """Write a bag with two image topics (front raw, rear compressed) and the front camera_info."""
    from rosbags.rosbag2 import Writer

    ts = messages.typestore()
    rgb = np.full((8, 12, 3), 90, np.uint8)
    png = make_bag.Frame(name="x", rgb=rgb).jpeg(95)
    with Writer(path, version=9) as w:
        qos = [storage.qos_profile()]
        front = w.add_connection("/front/image_raw", messages.IMAGE, typestore=ts, offered_qos_profiles=qos)
        info = w.add_connection("/front/camera_info", messages.CAMERA_INFO, typestore=ts, offered_qos_profiles=qos)
        rear = w.add_connection("/rear/image_raw/compressed", messages.COMPRESSED, typestore=ts,
                                offered_qos_profiles=qos)
        for i in range(3):
            t = START_NS + i * 100_000_000
            w.write(info, t, messages.serialize(calibration.camera_info_msg(
                calibration.default_intrinsics(12, 8), t, "front")))
            w.write(front, t, messages.serialize(messages.image_msg(rgb, t, "front")))
            w.write(rear, t + 1, messages.serialize(messages.compressed_msg(png, "jpeg", t + 1, "rear")))
    return path


def test_several_image_topics_need_topic(tmp_path, capsys):
    bag = write_two_camera_bag(tmp_path / "bag")
    assert extract.main([str(bag), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "2 image topics" in err and "/front/image_raw [Image, 3 msgs]" in err
    assert "/rear/image_raw/compressed [CompressedImage, 3 msgs]" in err and "--topic" in err
    assert extract.main([str(bag), "--out", str(tmp_path / "rear"), "--topic", "/rear/image_raw/compressed"]) == 0
    assert len(list((tmp_path / "rear").glob("*.png"))) == 3 and not list((tmp_path / "rear").glob("*.yaml"))
    assert extract.main([str(bag), "--out", str(tmp_path / "front"), "--topic", "/front/image_raw"]) == 0
    assert len(list((tmp_path / "front").glob("*.yaml"))) == 3
    assert extract.main([str(bag), "--out", str(tmp_path / "o"), "--topic", "/side/image_raw"]) == 1
    assert "image topic(s) /side/image_raw not in" in capsys.readouterr().err


def test_bad_arguments(frames_dir, tmp_path, capsys):
    bag = make(frames_dir, tmp_path / "bag")
    assert extract.main([str(bag), "--out", str(tmp_path / "o"), "--every", "0"]) == 1
    assert "--every must be >= 1" in capsys.readouterr().err
    assert extract.main([str(tmp_path / "nobag"), "--out", str(tmp_path / "o")]) == 1
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        extract.main([str(bag), "--out", str(tmp_path / "o"), "--every", "2", "--rate", "1"])
