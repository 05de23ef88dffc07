"""``pspnet infer``: images, folders and videos in, label/color/overlay/mosaic files out."""

from __future__ import annotations

import numpy as np

from pspnet_ros.tools import infer as infer_cli
from pspnet_ros.tools.media import VideoWriter, read_image, read_video, write_png

COMMON = ["--device", "cpu", "--size", "32x96", "--backend", "torch", "--no-progress"]


def img(h, w, seed):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_images_and_folders(tmp_path, tiny_checkpoint):
    folder = tmp_path / "frames"
    folder.mkdir()
    write_png(folder / "a.png", img(40, 100, 0))
    write_png(folder / "b.png", img(30, 50, 1))
    (folder / "notes.txt").write_text("ignored")
    single = tmp_path / "single.png"
    write_png(single, img(20, 30, 2))
    out = tmp_path / "out"
    rc = infer_cli.main([str(single), str(folder), "--out", str(out), "--checkpoint", str(tiny_checkpoint)] + COMMON)
    assert rc == 0
    for name, (h, w) in {"a": (40, 100), "b": (30, 50), "single": (20, 30)}.items():
        labels = read_image(out / f"{name}_labels.png")
        assert labels.shape == (h, w, 3) and set(np.unique(labels)) <= {0, 1}
        color = read_image(out / f"{name}_color.png")
        overlay = read_image(out / f"{name}_overlay.png")
        assert color.shape == overlay.shape == (h, w, 3)
        assert read_image(out / f"{name}_mosaic.png").shape == (h, 3 * w, 3)
    # the colour image is the palette applied to the label image
    pal = np.array([[255, 0, 0], [255, 0, 255]], np.uint8)
    np.testing.assert_array_equal(read_image(out / "a_color.png"), pal[read_image(out / "a_labels.png")[..., 0]])


def test_video_to_h264_mp4_and_label_pngs(tmp_path, tiny_checkpoint):
    src = tmp_path / "drive.mp4"
    with VideoWriter(src, fps=5) as w:
        for i in range(3):
            w.write(img(42, 100, i))
    out = tmp_path / "out"
    rc = infer_cli.main([str(src), "--out", str(out), "--checkpoint", str(tiny_checkpoint),
                         "--outputs", "overlay,mosaic", "--video-labels"] + COMMON)
    assert rc == 0
    import av

    with av.open(str(out / "drive_overlay.mp4")) as c:
        assert c.streams.video[0].codec_context.name == "h264"
    overlay = list(read_video(out / "drive_overlay.mp4"))
    assert len(overlay) == 3 and overlay[0].shape == (42, 100, 3)
    assert list(read_video(out / "drive_mosaic.mp4"))[0].shape == (42, 300, 3)
    assert sorted(p.name for p in (out / "drive_labels").iterdir()) == [f"{i:06d}.png" for i in range(3)]
    assert not (out / "drive_color.mp4").exists()


def test_odd_sized_video_frames_are_padded_for_yuv420(tmp_path):
    path = tmp_path / "odd.mp4"
    with VideoWriter(path, fps=10) as w:
        w.write(img(41, 99, 0))
    (frame,) = list(read_video(path))
    assert frame.shape == (42, 100, 3)


def test_bad_inputs(tmp_path, tiny_checkpoint, capsys):
    out = tmp_path / "out"
    rc = infer_cli.main([str(tmp_path / "missing.png"), "--out", str(out),
                         "--checkpoint", str(tiny_checkpoint)] + COMMON)
    assert rc == 2 and "missing.png: no such file" in capsys.readouterr().err
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    good = tmp_path / "good.png"
    write_png(good, img(20, 30, 0))
    rc = infer_cli.main([str(broken), str(good), "--out", str(out), "--checkpoint", str(tiny_checkpoint)] + COMMON)
    assert rc == 1  # one failure, the rest still written
    assert (out / "good_overlay.png").exists() and not (out / "broken_overlay.png").exists()
    rc = infer_cli.main([str(good), "--out", str(out), "--outputs", "labels,depth",
                         "--checkpoint", str(tiny_checkpoint)] + COMMON)
    assert rc == 2
