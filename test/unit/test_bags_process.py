"""`pspnet bag`: every frame of a real bag through the engine.

Outputs stamped like the inputs, both storage formats, and no corrupt output when interrupted.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pspnet_ros.tools.bags import messages, storage
from pspnet_ros.tools.bags import make_bag
from pspnet_ros.tools.bags import process

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "data" / "sample" / "kitti_road"
KINDS = ("labels", "color", "overlay", "drivable")


def read_bag(bag: Path):
    """(messages [(topic, msgtype, timestamp, raw bytes)], connections by topic, metadata)."""
    import yaml
    from rosbags.rosbag2 import Reader

    with Reader(bag) as reader:
        conns = {c.topic: c for c in reader.connections}
        msgs = [(c.topic, c.msgtype, t, bytes(d)) for c, t, d in reader.messages()]
    meta = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    return msgs, conns, meta


def make(tmp_path: Path, name: str, *args: str) -> Path:
    out = tmp_path / name
    assert make_bag.main([str(SAMPLE), "--out", str(out), "--start-time", "1700000000",
                          "--no-progress", *args]) == 0
    return out


@pytest.fixture(scope="module")
def seg(tiny_checkpoint):
    from pspnet_ros.inference import Segmenter

    return Segmenter.from_checkpoint(tiny_checkpoint, device="cpu")


def check_complete(out: Path, image_topic: str, ns: str = "/camera"):
    """Every input image in ``out`` has all outputs with its exact header and bag time."""
    msgs, conns, meta = read_bag(out)
    images = [(t, messages.deserialize(d, ty)) for top, ty, t, d in msgs if top == image_topic]
    by_kind = {k: {t: messages.deserialize(d, ty) for top, ty, t, d in msgs
                   if top == f"{ns}/segmentation/{k}"} for k in KINDS + ("camera_info",)}
    for t, img in images:
        for k, got in by_kind.items():
            assert t in got, f"{k} missing for frame at {t}"
            assert got[t].header.stamp == img.header.stamp
            assert got[t].header.frame_id == img.header.frame_id == "camera"
    for k, got in by_kind.items():
        assert len(got) == len(images), k  # no output without its input frame
    class_info = [d for top, _, _, d in msgs if top == f"{ns}/segmentation/class_info"]
    assert len(class_info) == (1 if images else 0)
    return msgs, conns, meta, images, by_kind


@pytest.mark.parametrize("fmt", ["mcap", "sqlite3"])
def test_every_frame_gets_every_output_equal_to_the_engine(tmp_path, tiny_checkpoint, seg, fmt):
    bag = make(tmp_path, "in", "--limit", "5", "--rate", "10", "--format", fmt)
    out = tmp_path / "out"
    summary = process.process_bag(bag, out, checkpoint=str(tiny_checkpoint), device="cpu",
                                  progress=False)
    assert (summary.frames_total, summary.frames_done, summary.frames_failed) == (5, 5, 0)
    assert storage.bag_format(out) == fmt and not storage.partial_dir(out).exists()

    msgs, conns, meta, images, outs = check_complete(out, "/camera/image_raw")
    assert len(images) == 5
    assert meta["custom_data"]["pspnet.complete"] == "true"
    # The input topics are copied unchanged, with their definitions and type hashes.
    in_msgs, in_conns, _ = read_bag(bag)
    assert [m for m in msgs if m[0] in in_conns] == in_msgs
    ts = messages.typestore()
    for topic, c in conns.items():
        assert c.digest == ts.hash_rihs01(c.msgtype), topic
    assert conns["/camera/segmentation/class_info"].ext.offered_qos_profiles[0] \
        .durability.name == "TRANSIENT_LOCAL"

    road = seg.classes.index("road")
    for t, img in images:
        frame = messages.image_to_rgb(img)
        direct = seg.predict(frame)[0]
        labels = messages.image_to_rgb(outs["labels"][t])[..., 0]
        assert outs["labels"][t].encoding == "mono8" and outs["color"][t].encoding == "rgb8"
        assert outs["overlay"][t].encoding == "rgb8" and outs["drivable"][t].encoding == "mono8"
        np.testing.assert_array_equal(labels, direct.labels)
        np.testing.assert_array_equal(messages.image_to_rgb(outs["color"][t]), seg.palette[labels])
        np.testing.assert_array_equal(messages.image_to_rgb(outs["drivable"][t])[..., 0],
                                      np.where(labels == road, 255, 0))
        assert messages.image_to_rgb(outs["overlay"][t]).shape == frame.shape
        assert list(outs["camera_info"][t].k) == list(messages.deserialize(
            next(d for top, _, tt, d in in_msgs if top == "/camera/camera_info" and tt == t),
            messages.CAMERA_INFO).k)


def test_compressed_sqlite3_in_mcap_out_at_network_resolution(tmp_path, tiny_checkpoint, seg):
    bag = make(tmp_path, "in", "--limit", "3", "--compressed", "--format", "sqlite3")
    out = tmp_path / "out"
    rc = process.main([str(bag), "--out", str(out), "--format", "mcap", "--checkpoint",
                       str(tiny_checkpoint), "--device", "cpu", "--output-resolution", "network",
                       "--confidence", "--no-progress"])
    assert rc == 0 and storage.bag_format(out) == "mcap"
    _, _, _, images, outs = check_complete(out, "/camera/image_raw/compressed")
    h, w = seg.inference_size
    conf = {t: messages.deserialize(d, ty) for top, ty, t, d in read_bag(out)[0]
            if top == "/camera/segmentation/confidence"}
    for t, _ in images:
        assert (outs["labels"][t].height, outs["labels"][t].width) == (h, w)
        assert conf[t].encoding == "mono8" and (conf[t].height, conf[t].width) == (h, w)
        info = outs["camera_info"][t]
        assert (info.height, info.width) == (h, w)
        assert info.k[0] == pytest.approx(721.5377 * w / 1242)
        assert info.k[5] == pytest.approx(172.854 * h / 375)


def test_interrupt_keeps_a_complete_bag_up_to_the_last_frame(tmp_path, tiny_checkpoint):
    bag = make(tmp_path, "in", "--limit", "8")
    out = tmp_path / "out"
    calls = []

    def ctrl_c_after_two(done, total):
        calls.append(done)
        if len(calls) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt) as exc:
        process.process_bag(bag, out, checkpoint=str(tiny_checkpoint), device="cpu",
                            progress=False, on_frame=ctrl_c_after_two)
    summary = exc.value.summary
    assert summary.interrupted and 2 <= summary.frames_written < 8
    assert not storage.partial_dir(out).exists()
    _, _, meta, images, _ = check_complete(out, "/camera/image_raw")
    assert len(images) == summary.frames_written == summary.frames_done
    assert meta["custom_data"]["pspnet.complete"] == "false"
    assert meta["custom_data"]["pspnet.frames"] == f"{summary.frames_written}/8"
    # The first frames, in order, with nothing from the frames that were not processed.
    in_stamps = [t for top, _, t, _ in read_bag(bag)[0] if top == "/camera/image_raw"]
    assert [t for t, _ in images] == in_stamps[: len(images)]


def test_error_mid_run_leaves_nothing(tmp_path, tiny_checkpoint):
    bag = make(tmp_path, "in", "--limit", "4")
    out = tmp_path / "out"

    def disk_full(done, total):
        if done == 2:
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        process.process_bag(bag, out, checkpoint=str(tiny_checkpoint), device="cpu",
                            progress=False, on_frame=disk_full)
    assert not out.exists() and not storage.partial_dir(out).exists()


def test_sigint_to_the_cli_leaves_a_readable_complete_bag(tmp_path, tiny_checkpoint):
    """A real Ctrl-C (SIGINT) to `pspnet bag` while it runs."""
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(40):  # a longer sequence: the sample frames three times over
        src = sorted(SAMPLE.glob("*.jpg"))[i % 12]
        (frames / f"{i:03d}.jpg").write_bytes(src.read_bytes())
    bag = tmp_path / "in"
    assert make_bag.main([str(frames), "--out", str(bag), "--no-progress"]) == 0
    out = tmp_path / "out"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "pspnet_ros.tools.cli", "bag", str(bag), "--out",
                             str(out), "--checkpoint", str(tiny_checkpoint), "--device", "cpu"],
                            cwd=REPO, env=env, stderr=subprocess.PIPE)
    os.set_blocking(proc.stderr.fileno(), False)
    err = b""
    deadline = time.monotonic() + 120
    while not re.search(rb"\b([3-9]|\d\d)/40\b", err):  # tqdm shows 3+ frames done
        assert proc.poll() is None, err.decode(errors="replace")
        assert time.monotonic() < deadline, err.decode(errors="replace")
        time.sleep(0.02)
        err += proc.stderr.read() or b""
    proc.send_signal(signal.SIGINT)
    os.set_blocking(proc.stderr.fileno(), True)
    err += proc.stderr.read()
    rc = proc.wait(60)
    text = err.decode(errors="replace")
    assert rc == 130, text
    assert "holds the first" in text and not storage.partial_dir(out).exists()
    _, _, meta, images, _ = check_complete(out, "/camera/image_raw")
    assert 3 <= len(images) < 40
    assert meta["custom_data"]["pspnet.frames"] == f"{len(images)}/40"


def test_cli_errors_are_specific(tmp_path, tiny_checkpoint, capsys):
    bag = make(tmp_path, "in", "--limit", "1")
    assert process.main([str(bag), "--out", str(tmp_path / "o"), "--image-topic", "/nope",
                         "--checkpoint", str(tiny_checkpoint), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "/nope" in err and "/camera/image_raw" in err
    assert process.main([str(tmp_path / "missing"), "--out", str(tmp_path / "o"),
                         "--checkpoint", str(tiny_checkpoint)]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert process.main([str(bag), "--out", str(bag), "--checkpoint", str(tiny_checkpoint)]) == 1
    assert "differ" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
