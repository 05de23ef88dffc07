"""`pspnet make-bag` and the rosbags helpers: real bags (mcap and sqlite3) from real frames."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pspnet_ros.tools.bags import calibration, messages, storage
from pspnet_ros.tools.bags import make_bag
from pspnet_ros.errors import InputError

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "data" / "sample" / "kitti_road"
START = 1_700_000_000.25


def read_all(bag: Path):
    """{topic: [(bag_timestamp, msg)]} and {topic: connection} of a bag."""
    from rosbags.rosbag2 import Reader

    out, conns = {}, {}
    with Reader(bag) as reader:
        for c in reader.connections:
            conns[c.topic] = c
        for c, t, data in reader.messages():
            out.setdefault(c.topic, []).append((t, messages.deserialize(data, c.msgtype)))
    return out, conns


@pytest.fixture()
def frames_dir(tmp_path) -> Path:
    d = tmp_path / "kitti"
    d.mkdir()
    for p in sorted(SAMPLE.glob("*.jpg"))[:3]:
        shutil.copy(p, d / p.name)
    return d


@pytest.mark.parametrize("fmt", ["mcap", "sqlite3"])
def test_make_bag_from_image_folder(frames_dir, tmp_path, fmt, capsys):
    out = tmp_path / "bag"
    rc = make_bag.main([str(frames_dir), "--out", str(out), "--format", fmt, "--rate", "4",
                        "--start-time", str(START), "--no-progress"])
    assert rc == 0
    assert storage.bag_format(out) == fmt
    assert (out / ("bag.mcap" if fmt == "mcap" else "bag.db3")).is_file()
    assert not storage.partial_dir(out).exists()
    msgs, conns = read_all(out)
    assert set(msgs) == {"/camera/image_raw", "/camera/camera_info"}
    assert conns["/camera/image_raw"].msgtype == messages.IMAGE
    assert conns["/camera/camera_info"].msgtype == messages.CAMERA_INFO
    ts = messages.typestore()
    for c in conns.values():  # definitions and hashes as ros2 bag record writes them
        assert c.digest == ts.hash_rihs01(c.msgtype)
        assert c.msgdef.data == ts.generate_msgdef(c.msgtype, ros_version=2)[0]

    files = sorted(frames_dir.glob("*.jpg"))
    images = msgs["/camera/image_raw"]
    assert len(images) == len(files) == 3
    start_ns = int(round(START * 1e9))
    for i, ((t, msg), path) in enumerate(zip(images, files)):
        expected = start_ns + i * 250_000_000
        assert t == expected == messages.header_ns(msg)  # bag time == header stamp == start + i/rate
        assert msg.header.frame_id == "camera"
        assert msg.encoding == "rgb8" and msg.step == msg.width * 3
        np.testing.assert_array_equal(messages.image_to_rgb(msg),
                                      np.asarray(Image.open(path).convert("RGB")))
    infos = msgs["/camera/camera_info"]
    assert [t for t, _ in infos] == [t for t, _ in images]
    info = infos[0][1]
    assert (info.width, info.height) == (1242, 375)
    assert info.k[0] == pytest.approx(721.5377) and info.k[2] == pytest.approx(609.5593)
    assert info.distortion_model == "plumb_bob" and list(info.d) == [0.0] * 5
    assert "kitti_road" not in capsys.readouterr().err  # summary goes to stdout


def test_make_bag_compressed_keeps_the_jpeg_bytes(frames_dir, tmp_path):
    out = tmp_path / "cbag"
    assert make_bag.main([str(frames_dir), "--out", str(out), "--compressed", "--topic",
                          "/front/image", "--start-time", "5", "--no-progress"]) == 0
    msgs, conns = read_all(out)
    assert set(msgs) == {"/front/image/compressed", "/front/camera_info"}
    assert conns["/front/image/compressed"].msgtype == messages.COMPRESSED
    files = sorted(frames_dir.glob("*.jpg"))
    for i, ((t, msg), path) in enumerate(zip(msgs["/front/image/compressed"], files)):
        assert t == messages.header_ns(msg) == 5_000_000_000 + i * 100_000_000  # default 10 Hz
        assert messages.compressed_format(msg) == "jpeg"
        assert bytes(msg.data) == path.read_bytes()


def test_make_bag_from_video_uses_its_rate_and_default_intrinsics(tmp_path):
    import av

    video = tmp_path / "clip.mp4"
    rng = np.random.default_rng(0)
    with av.open(str(video), "w") as container:
        stream = container.add_stream("libx264", rate=5)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for _ in range(4):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8),
                                               format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    out = tmp_path / "vbag"
    assert make_bag.main([str(video), "--out", str(out), "--start-time", "0", "--no-progress"]) == 0
    msgs, _ = read_all(out)
    images = msgs["/camera/image_raw"]
    assert [t for t, _ in images] == [0, 200_000_000, 400_000_000, 600_000_000]
    assert (images[0][1].width, images[0][1].height) == (64, 48)
    info = msgs["/camera/camera_info"][0][1]
    assert info.k[0] == pytest.approx(32 / np.tan(np.radians(30)))  # 60 deg horizontal FOV
    assert (info.k[2], info.k[5]) == (32.0, 24.0)


def test_make_bag_reads_a_camera_calibration_yaml(frames_dir, tmp_path):
    calib = tmp_path / "cam.yaml"
    calib.write_text(
        "image_width: 1242\nimage_height: 375\ncamera_name: front\n"
        "camera_matrix: {rows: 3, cols: 3, data: [700, 0, 620, 0, 710, 180, 0, 0, 1]}\n"
        "distortion_model: plumb_bob\n"
        "distortion_coefficients: {rows: 1, cols: 5, data: [-0.1, 0.01, 0, 0, 0]}\n"
        "projection_matrix: {rows: 3, cols: 4, data: [690, 0, 621, 0, 0, 695, 181, 0, 0, 0, 1, 0]}\n")
    out = tmp_path / "bag"
    assert make_bag.main([str(frames_dir), "--out", str(out), "--camera-info", str(calib),
                          "--limit", "1", "--no-progress"]) == 0
    info = read_all(out)[0]["/camera/camera_info"][0][1]
    assert list(info.k) == [690, 0, 621, 0, 695, 181, 0, 0, 1]
    assert list(info.d) == pytest.approx([-0.1, 0.01, 0, 0, 0])


def test_make_bag_errors_leave_nothing_behind(frames_dir, tmp_path, capsys):
    # Messages are read from stderr: launch_testing's pytest plugin installs launch's logger
    # class (propagate=False), so caplog sees nothing in this suite.
    (frames_dir / "zz_broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "bag"
    assert make_bag.main([str(frames_dir), "--out", str(out), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "cannot read image" in err and "zz_broken.jpg" in err
    assert not out.exists() and not storage.partial_dir(out).exists()

    empty = tmp_path / "empty"
    empty.mkdir()
    assert make_bag.main([str(empty), "--out", str(out), "--no-progress"]) == 1
    assert "no images" in capsys.readouterr().err
    assert make_bag.main([str(frames_dir), "--out", str(out), "--topic", "camera/image",
                          "--no-progress"]) == 1
    assert "invalid topic name" in capsys.readouterr().err

    out.mkdir()
    assert make_bag.main([str(frames_dir), "--out", str(out), "--no-progress"]) == 1
    assert "exists" in capsys.readouterr().err


def test_scale_camera_info_scales_k_and_p_only():
    msg = calibration.camera_info_msg(calibration.KITTI_P2, 0, "camera")
    half = calibration.scale_camera_info(msg, (375, 1242), (188, 621))
    k = np.array(half.k).reshape(3, 3)
    assert k[0, 0] == pytest.approx(721.5377 / 2) and k[1, 1] == pytest.approx(721.5377 * 188 / 375)
    assert k[0, 2] == pytest.approx(609.5593 / 2) and k[2, 2] == 1.0
    assert np.array(half.p).reshape(3, 4)[0, 3] == pytest.approx(44.85728 / 2)
    assert list(half.d) == list(msg.d) and list(half.r) == list(msg.r)
    assert (half.width, half.height) == (621, 188)


def test_topic_conventions():
    assert messages.camera_info_topic("/camera/image_raw") == "/camera/camera_info"
    assert messages.camera_info_topic("/cam/image/compressed", messages.COMPRESSED) == "/cam/camera_info"
    assert messages.camera_info_topic("/image") == "/camera_info"
    assert messages.join_topic(messages.topic_namespace("/a/b/image"), "segmentation/labels") == \
        "/a/b/segmentation/labels"


def test_decoding_rejects_unusable_messages():
    ts = messages.typestore()
    bad = ts.types[messages.IMAGE](header=messages.header(0, "c"), height=2, width=2, encoding="32FC1",
                             is_bigendian=0, step=8, data=np.zeros(16, np.uint8))
    with pytest.raises(InputError, match="32FC1"):
        messages.image_to_rgb(bad)
    png = messages.compressed_msg(b"\x89PNG\r\n\x1a\nxx", "", 0, "c")
    # sniffed as PNG, refused from its header before any decoding (as in the node)
    for check in (messages.compressed_format, messages.decode_compressed):
        with pytest.raises(InputError, match="PNG data truncated"):
            check(png)


def test_shipped_sample_is_real_kitti_val_with_attribution(data_root):
    stems = sorted(p.stem for p in SAMPLE.glob("*.jpg"))
    assert 10 <= len(stems) <= 15
    val = set((data_root / "kitti_road" / "val.txt").read_text().split())
    assert set(stems) <= val  # the shipped model never trained on the demo frames
    for s in stems:
        assert (SAMPLE / f"{s}.jpg").read_bytes() == \
            (data_root / "kitti_road" / "image_2" / f"{s}.jpg").read_bytes()
    readme = (SAMPLE.parent / "README.md").read_text()
    assert "CC BY-NC-SA 3.0" in readme and "Fritsch" in readme
    assert sum(p.stat().st_size for p in SAMPLE.iterdir()) < 5_000_000


def test_make_bag_writes_the_kitti_bev_parameters(tmp_path, capsys):
    import yaml

    from pspnet_ros import bev

    params = tmp_path / "bev.yaml"
    assert make_bag.main([str(SAMPLE), "--out", str(tmp_path / "bag"), "--limit", "1", "--no-progress",
                          "--bev-params", str(params)]) == 0
    text = params.read_text()
    assert "--params-file" in text and "um_000004.txt" in text  # how to load it, where it came from
    values = yaml.safe_load(text)["/**"]["ros__parameters"]["bev"]
    assert values["enable"] is True and values["frame_id"] == "base_footprint"
    t = bev.check_rigid(values["camera_to_ground"])
    calib = bev.read_kitti_calib(SAMPLE / "calib" / "um_000004.txt")  # the first frame's
    np.testing.assert_allclose(t, calib.camera_to_ground(), atol=1e-8)
    assert 1.5 < bev.camera_height(t) < 1.8
    # With the bag's camera_info K, the road 10 m straight ahead is in the lower middle of the image.
    info = read_all(tmp_path / "bag")[0]["/camera/camera_info"][0][1]
    uv, ok = bev.GroundProjector(info.k, (375, 1242), t, bev.GridSpec()).ground_to_pixel(
        np.array([[10.0, 0.0, 0.0]]))
    assert ok[0] and 550 < uv[0, 0] < 680 and 250 < uv[0, 1] < 375


def test_make_bag_bev_params_without_a_calibration_says_what_to_do(frames_dir, tmp_path, capsys):
    out = tmp_path / "bag"
    assert make_bag.main([str(frames_dir), "--out", str(out), "--no-progress",
                          "--bev-params", str(tmp_path / "bev.yaml")]) == 1
    assert "--kitti-calib" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "bev.yaml").exists()
