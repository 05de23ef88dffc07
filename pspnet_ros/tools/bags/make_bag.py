"""``pspnet make-bag``: image folders or videos -> a rosbag2 with Image (or CompressedImage) and CameraInfo.

The bag is readable by ``ros2 bag info`` / ``ros2 bag play``.

    pspnet make-bag data/sample/kitti_road --out sample_bag --rate 5
    pspnet make-bag drive.mp4 --out drive_bag --compressed --topic /front/image_raw
    pspnet make-bag data/sample/kitti_road --out sample_bag --bev-params sample_bev.yaml

``--bev-params FILE`` also writes the node parameters for ``segmentation/drivable_grid``: the
camera -> ground transform of the first frame's KITTI calibration (``--kitti-calib``, by default
``calib/<stem>.txt`` next to the images or beside their folder), loaded with a second
``--params-file``. On a robot the same 16 numbers come from TF instead (config/pspnet.yaml).

Frame ``i`` is stamped ``start + i / rate`` in its header, and the bag records it at that same
time, so ``ros2 bag play --clock`` reproduces the stream exactly. Folders are read in sorted
file-name order; several inputs are concatenated.
"""

from __future__ import annotations

import argparse
import io
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Sequence

import numpy as np

from . import calibration, messages, storage
from pspnet_ros.errors import InputError

LOGGER = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg")
DEFAULT_IMAGE_RATE = 10.0  # KITTI and most automotive cameras record at 10 Hz
_KITTI_STEM = re.compile(r"^(um|umm|uu)_\d{6}$|^\d{6}$|^\d{10}$")


@dataclass
class Frame:
    """One input frame: its pixels (lazily decoded) or its original encoded bytes."""

    name: str
    path: Optional[Path] = None
    rgb: Optional[np.ndarray] = None

    def array(self) -> np.ndarray:
        if self.rgb is None:
            from PIL import Image

            try:
                with Image.open(self.path) as im:
                    self.rgb = np.asarray(im.convert("RGB"))
            except Exception as exc:
                raise InputError(f"cannot read image {self.path}: {exc}") from exc
        return self.rgb

    def size(self):
        """(width, height) without decoding the pixels when they come from a file."""
        if self.rgb is not None:
            return self.rgb.shape[1], self.rgb.shape[0]
        from PIL import Image

        try:
            with Image.open(self.path) as im:
                return im.size
        except Exception as exc:
            raise InputError(f"cannot read image {self.path}: {exc}") from exc

    def jpeg(self, quality: int) -> bytes:
        """JPEG bytes: the file itself when it is a JPEG (no second lossy generation)."""
        if self.path is not None and self.path.suffix.lower() in (".jpg", ".jpeg"):
            return self.path.read_bytes()
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(self.array()).save(buf, format="JPEG", quality=quality)
        return buf.getvalue()


def list_images(folder: Path, pattern: str = "*") -> List[Path]:
    files = sorted(p for p in folder.glob(pattern)
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"no images ({', '.join(IMAGE_SUFFIXES)}) matching {pattern!r} in "
                         f"{folder}")
    return files


def video_frames(path: Path) -> Iterator[Frame]:
    from ..media import read_video

    for i, rgb in enumerate(read_video(path)):
        yield Frame(name=f"{path.stem}:{i}", rgb=rgb)


def video_rate(path: Path) -> Optional[float]:
    from ..media import video_info

    return video_info(path)[1]


def iter_frames(inputs: Sequence[Path], pattern: str = "*") -> Iterator[Frame]:
    for src in inputs:
        if src.is_dir():
            for p in list_images(src, pattern):
                yield Frame(name=p.stem, path=p)
        elif src.suffix.lower() in IMAGE_SUFFIXES:
            yield Frame(name=src.stem, path=src)
        elif src.suffix.lower() in VIDEO_SUFFIXES:
            yield from video_frames(src)
        else:
            raise InputError(f"{src}: not a folder, image ({', '.join(IMAGE_SUFFIXES)}) or "
                             f"video ({', '.join(VIDEO_SUFFIXES)})")


def count_frames(inputs: Sequence[Path], pattern: str = "*") -> Optional[int]:
    """Return the number of frames when known without decoding (image folders and files), else None."""
    n = 0
    for src in inputs:
        if src.is_dir():
            n += len(list_images(src, pattern))
        elif src.suffix.lower() in IMAGE_SUFFIXES:
            n += 1
        else:
            return None
    return n


def looks_like_kitti(inputs: Sequence[Path], pattern: str = "*") -> bool:
    for src in inputs:
        if "kitti" in str(src.resolve()).lower():
            return True
        if src.is_dir():
            stems = [p.stem for p in list_images(src, pattern)[:5]]
            if stems and all(_KITTI_STEM.match(s) for s in stems):
                return True
    return False


def load_calibration_yaml(path: Path) -> calibration.Intrinsics:
    """Load a camera_calibration / camera_info_manager YAML (image_width, camera_matrix, ...)."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
        k = data["camera_matrix"]["data"]
        p = data.get("projection_matrix", {}).get("data") or [k[0], 0, k[2], 0, 0, k[4], k[5], 0,
                                                                0, 0, 1, 0]
        d = tuple(float(v) for v in data.get("distortion_coefficients", {}).get("data", []))
        return calibration.Intrinsics(int(data["image_width"]), int(data["image_height"]), float(p[0]),
                             float(p[5]), float(p[2]), float(p[6]), d or (0.0,) * 5,
                             tx=float(p[3]), source=str(path))
    except (OSError, KeyError, TypeError, IndexError, ValueError, yaml.YAMLError) as exc:
        raise InputError(f"cannot read camera calibration {path}: {exc!r} (expected the "
                         "camera_calibration YAML format: image_width, image_height, "
                         "camera_matrix, distortion_coefficients, projection_matrix)") from exc


def choose_intrinsics(spec: str, inputs: Sequence[Path], pattern: str,
                      width: int, height: int) -> Optional[calibration.Intrinsics]:
    """CameraInfo model for frames of ``width`` x ``height``: from a YAML, KITTI's P2 or default.

    ``auto`` uses KITTI's P2 when the input looks like KITTI, else the documented default
    (60 degree horizontal field of view, centred principal point, no distortion).
    """
    if spec == "none":
        return None
    if spec == "auto":
        spec = "kitti" if looks_like_kitti(inputs, pattern) else "default"
    if spec == "kitti":
        return calibration.KITTI_P2.scaled(width, height)
    if spec == "default":
        return calibration.default_intrinsics(width, height)
    return load_calibration_yaml(Path(spec))


def write_bag(out: Path, frames: Iterator[Frame], *, topic: str, rate: float, start_ns: int,
              frame_id: str = "camera", compressed: bool = False, fmt: str = "mcap",
              camera_info: str = "auto", inputs: Sequence[Path] = (), pattern: str = "*",
              limit: Optional[int] = None, jpeg_quality: int = 90, overwrite: bool = False,
              progress: bool = True, distro: str = storage.DEFAULT_DISTRO) -> int:
    """Write ``frames`` into a new bag at ``out``; returns the number of frames written."""
    from rosbags.rosbag2 import Writer
    from tqdm import tqdm

    if rate <= 0:
        raise InputError(f"--rate must be > 0, got {rate}")
    messages.validate_topic(topic)
    image_topic = f"{topic}/compressed" if compressed else topic
    info_topic = messages.camera_info_topic(topic)
    ts = messages.typestore()
    count = 0
    intr: Optional[calibration.Intrinsics] = None
    base_intr: Optional[calibration.Intrinsics] = None
    storage.check_distro(distro)
    with storage.atomic_bag_dir(out, overwrite=overwrite) as tmp:
        writer = Writer(tmp, version=storage.writer_version(distro), storage_plugin=storage.storage_plugin(fmt))
        writer.open()
        try:
            # Offered QoS as a camera driver offers it (reliable, volatile): `ros2 bag play`
            # publishes with it.
            qos = [storage.qos_profile(reliable=True)]
            img_conn = writer.add_connection(image_topic, messages.COMPRESSED if compressed else messages.IMAGE,
                                             typestore=ts, offered_qos_profiles=qos)
            info_conn = None
            total = count_frames(inputs, pattern) if inputs else None
            total = min(total, limit) if (total is not None and limit is not None) else (total or limit)
            bar = tqdm(frames, total=total, unit="frame", disable=not progress, desc="make-bag")
            for frame in bar:
                if limit is not None and count >= limit:
                    break
                stamp = messages.stamp_ns(start_ns, count, rate)
                width, height = frame.size()
                if count == 0:
                    base_intr = choose_intrinsics(camera_info, inputs, pattern, width, height)
                    if base_intr is not None:
                        info_conn = writer.add_connection(info_topic, messages.CAMERA_INFO, typestore=ts,
                                                          offered_qos_profiles=qos)
                        LOGGER.info("camera_info on %s: %s intrinsics", info_topic,
                                    base_intr.source)
                if base_intr is not None and (intr is None or (intr.width, intr.height)
                                              != (width, height)):
                    if intr is not None:
                        LOGGER.warning("%s is %dx%d, earlier frames %dx%d: camera_info scaled "
                                       "to match", frame.name, width, height, intr.width,
                                       intr.height)
                    intr = base_intr.scaled(width, height)
                if info_conn is not None:
                    writer.write(info_conn, stamp,
                                 messages.serialize(calibration.camera_info_msg(intr, stamp, frame_id)))
                if compressed:
                    msg = messages.compressed_msg(frame.jpeg(jpeg_quality), "rgb8; jpeg compressed bgr8",
                                            stamp, frame_id)
                else:
                    msg = messages.image_msg(frame.array(), stamp, frame_id)
                writer.write(img_conn, stamp, messages.serialize(msg))
                count += 1
            if count == 0:
                raise InputError("no frames to write")
            writer.set_custom_data("pspnet.source", ", ".join(str(p) for p in inputs)[:1000])
            writer.close()
        except BaseException:
            writer.abort()
            raise
        storage.finish_for_distro(tmp, distro)
    return count


def describe(path: Path) -> str:
    """Return a short ``ros2 bag info``-like summary of a bag."""
    reader = storage.open_reader(path)
    try:
        lines = [f"bag:      {path}  ({storage.bag_format(path)})",
                 f"duration: {reader.duration / 1e9:.3f} s   start: {reader.start_time / 1e9:.3f}"
                 f"   messages: {reader.message_count}"]
        width = max(len(c.topic) for c in reader.connections)
        for c in reader.connections:
            lines.append(f"  {c.topic:<{width}}  {c.msgtype:<32} {c.msgcount:>6} msgs")
        return "\n".join(lines)
    finally:
        reader.close()


def write_bev_params(path: Path, calib_file: Path, frame_id: str = "base_footprint") -> Path:
    """Write a node parameters file enabling the BEV grid with ``calib_file``'s camera_to_ground.

    The transform maps camera 2's optical frame (the frame of P2's K, which the bag's camera_info
    carries for KITTI) to a REP-103 ground frame on the road plane (:mod:`pspnet_ros.bev`).

    Raises:
        InputError: the calibration file is unusable.
    """
    import yaml

    from pspnet_ros import bev

    try:
        calib = bev.read_kitti_calib(calib_file)
    except bev.BevError as exc:
        raise InputError(str(exc)) from None
    t = calib.camera_to_ground()
    params = {"bev": {"enable": True, "camera_to_ground": [round(float(v), 9) for v in t.ravel()],
                      "frame_id": frame_id}}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "# Written by `pspnet make-bag --bev-params`: segmentation_node parameters for\n"
        "# segmentation/drivable_grid. Load next to the main file:\n"
        "#   --ros-args --params-file config/pspnet.yaml --params-file THIS_FILE\n"
        f"# camera_to_ground from {calib_file} (P2, R0_rect, Tr_cam_to_road, as the KITTI road devkit):\n"
        f"# camera {bev.camera_height(t):.3f} m above the road; row-major 4x4, camera optical frame ->\n"
        f"# {frame_id} (x forward, y left, z up, z = 0 on the road).\n"
        + yaml.safe_dump({"/**": {"ros__parameters": params}}, sort_keys=False))
    return path


def find_kitti_calib(spec: Optional[Path], inputs: Sequence[Path], pattern: str = "*") -> Path:
    """Find the KITTI calibration for ``--bev-params``: ``spec``, else the first frame's ``calib/<stem>.txt``."""
    if spec is not None:
        if not spec.is_file():
            raise InputError(f"--kitti-calib {spec} does not exist")
        return spec
    from pspnet_ros.bev import kitti_calib_for

    first = next(iter_frames(inputs, pattern), None)
    found = kitti_calib_for(first.path) if first is not None and first.path is not None else None
    if found is None:
        where = (f"{first.path.parent / 'calib'} or {first.path.parent.parent / 'calib'}"
                 if first is not None and first.path is not None else "(no image files)")
        raise InputError(f"--bev-params: no KITTI calibration for the first frame in {where}; give "
                         "one with --kitti-calib FILE")
    return found


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pspnet make-bag", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", type=Path,
                   help="image folders (sorted by name), image files or videos (PyAV)")
    p.add_argument("--out", type=Path, required=True, help="bag directory to create")
    p.add_argument("--format", choices=storage.FORMATS, default=None,
                   help="rosbag2 storage plugin (default mcap, ROS 2's default since Iron; "
                        "sqlite3 with --distro humble)")
    p.add_argument("--distro", choices=storage.DISTROS, default=storage.DEFAULT_DISTRO,
                   help=f"ROS 2 distro that will play the bag (default {storage.DEFAULT_DISTRO}: metadata "
                        "version 9, read by Jazzy and Kilted; humble: version 5)"),
    p.add_argument("--rate", type=float, default=None,
                   help=f"frame rate in Hz (default: the video's rate, {DEFAULT_IMAGE_RATE:g} "
                        "for images)")
    p.add_argument("--topic", default="/camera/image_raw",
                   help="image topic; camera_info goes to its sibling 'camera_info'")
    p.add_argument("--compressed", action="store_true",
                   help="write sensor_msgs/CompressedImage (JPEG) on TOPIC/compressed")
    p.add_argument("--jpeg-quality", type=int, default=90,
                   help="quality when --compressed must encode (JPEG files are copied as is)")
    p.add_argument("--frame-id", default="camera", help="header.frame_id of every message")
    p.add_argument("--start-time", type=float, default=None,
                   help="stamp of the first frame in seconds since the epoch (default: now); "
                        "fix it for reproducible bags")
    p.add_argument("--camera-info", default="auto",
                   help="auto (KITTI P2 for KITTI folders, else a 60 deg HFOV pinhole), kitti, "
                        "default, none, or a camera_calibration YAML file")
    p.add_argument("--bev-params", type=Path, default=None, metavar="FILE",
                   help="also write node parameters enabling segmentation/drivable_grid with the "
                        "KITTI camera->ground transform (from --kitti-calib)")
    p.add_argument("--kitti-calib", type=Path, default=None, metavar="FILE",
                   help="KITTI calibration file for --bev-params (default: calib/<stem>.txt of the "
                        "first frame, next to the images or beside their folder)")
    p.add_argument("--bev-frame-id", default="base_footprint",
                   help="bev.frame_id written by --bev-params (default base_footprint)")
    p.add_argument("--pattern", default="*", help="glob for files inside folders (e.g. '0016E5_*')")
    p.add_argument("--limit", type=int, default=None, help="write at most N frames")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = get_args_parser().parse_args(argv)
    try:
        for src in args.inputs:
            if not src.exists():
                raise InputError(f"input {src} does not exist")
        calib = find_kitti_calib(args.kitti_calib, args.inputs, args.pattern) if args.bev_params else None
        rate = args.rate
        if rate is None:
            videos = [s for s in args.inputs if s.suffix.lower() in VIDEO_SUFFIXES]
            rate = (video_rate(videos[0]) if videos else None) or DEFAULT_IMAGE_RATE
        start = args.start_time if args.start_time is not None else float(int(time.time()))
        n = write_bag(args.out, iter_frames(args.inputs, args.pattern), topic=args.topic,
                      rate=rate, start_ns=int(round(start * 1e9)), frame_id=args.frame_id,
                      compressed=args.compressed, fmt=args.format or storage.default_format(args.distro),
                      camera_info=args.camera_info, distro=args.distro,
                      inputs=args.inputs, pattern=args.pattern, limit=args.limit,
                      jpeg_quality=args.jpeg_quality, overwrite=args.overwrite,
                      progress=not args.no_progress)
        if calib is not None:
            write_bev_params(args.bev_params, calib, args.bev_frame_id)
            LOGGER.info("BEV parameters (camera_to_ground of %s) -> %s", calib, args.bev_params)
    except (InputError, messages.BagError) as exc:
        LOGGER.error("%s", exc)
        return 1
    LOGGER.info("wrote %d frames at %.3g Hz to %s", n, rate, args.out)
    print(describe(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
