"""``pspnet extract-frames``: sample a rosbag2's camera frames into PNG files for labelling.

    pspnet extract-frames drive_bag --out my_data/images --rate 1
    pspnet extract-frames drive_bag --out my_data/images --every 10 --topic /front/image_raw

Each kept frame is written as ``<sec>_<nanosec>.png`` (its header stamp, seconds zero-padded to
10 digits so names sort in time order), lossless whatever the bag holds (sensor_msgs/Image in
any encoding the node reads, or CompressedImage JPEG/PNG). When the bag has the image topic's
``camera_info`` (the camera_info_manager sibling topic), the frame's calibration is written next
to it as ``<stem>.yaml`` in the camera_calibration format: the file that ``camera_calibration``
writes and ``camera_info_manager`` (``camera_info_url``) and ``pspnet make-bag --camera-info``
read, so one frame's calibration can be handed to a driver or a new bag as is. The calibration
is the one with the frame's stamp, else the nearest in time.

``--every N`` keeps frames 0, N, 2N, ... of the topic; ``--rate HZ`` keeps the first frame and
then each frame at least 1/HZ seconds (header stamps) after the last one kept.
"""

from __future__ import annotations

import argparse
import bisect
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from . import messages, storage
from pspnet_ros.errors import InputError

LOGGER = logging.getLogger(__name__)


@dataclass
class ExtractSummary:
    """What one extraction wrote."""

    topic: str
    msgtype: str
    frames_in_bag: int
    written: List[Path]
    camera_info: int
    camera_info_topic: str


def frame_stem(stamp_ns: int) -> str:
    """``<sec>_<nanosec>`` of a stamp, seconds zero-padded to 10 digits (names sort in time order)."""
    sec, nsec = divmod(int(stamp_ns), 1_000_000_000)
    return f"{sec:010d}_{nsec:09d}"


def camera_info_yaml(info, camera_name: str) -> str:
    """Return a CameraInfo as camera_calibration's YAML (what camera_info_manager loads)."""
    import yaml

    def matrix(rows: int, cols: int, values) -> Dict[str, object]:
        return {"rows": rows, "cols": cols, "data": [float(v) for v in np.asarray(values, np.float64).ravel()]}

    d = np.asarray(info.d, np.float64)
    doc = {"image_width": int(info.width), "image_height": int(info.height), "camera_name": camera_name,
           "camera_matrix": matrix(3, 3, info.k), "distortion_model": str(info.distortion_model),
           "distortion_coefficients": matrix(1, int(d.size), d), "rectification_matrix": matrix(3, 3, info.r),
           "projection_matrix": matrix(3, 4, info.p)}
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=None)


class _CalibrationIndex:
    """The camera_info messages of a bag by header stamp, identical ones stored once."""

    def __init__(self, reader, connections) -> None:
        self.stamps: List[int] = []
        self.which: List[int] = []
        self.infos: List[object] = []
        keys: Dict[tuple, int] = {}
        if not connections:
            return
        for _, timestamp, data in reader.messages(connections=connections):
            info = messages.deserialize(data, messages.CAMERA_INFO)
            key = (int(info.width), int(info.height), str(info.distortion_model), tuple(np.asarray(info.d).tolist()),
                   tuple(np.asarray(info.k).tolist()), tuple(np.asarray(info.r).tolist()),
                   tuple(np.asarray(info.p).tolist()))
            if key not in keys:
                keys[key] = len(self.infos)
                self.infos.append(info)
            self.stamps.append(messages.header_ns(info) or int(timestamp))
            self.which.append(keys[key])
        order = sorted(range(len(self.stamps)), key=self.stamps.__getitem__)
        self.stamps = [self.stamps[i] for i in order]
        self.which = [self.which[i] for i in order]

    def at(self, stamp: int):
        """Return the camera_info with this stamp, else the nearest in time; None without any."""
        if not self.stamps:
            return None
        i = bisect.bisect_left(self.stamps, stamp)
        if i == len(self.stamps) or (i > 0 and stamp - self.stamps[i - 1] <= self.stamps[i] - stamp):
            i -= 1
        return self.infos[self.which[i]]


def _pick_topic(reader, topic: Optional[str]) -> storage.ImageTopic:
    topics = storage.image_topics(reader, [topic] if topic else [])
    if len(topics) > 1:
        raise messages.BagError(f"{reader.path} has {len(topics)} image topics: "
                                + ", ".join(f"{t.topic} [{t.msgtype.rsplit('/', 1)[-1]}, {t.count} msgs]"
                                            for t in topics)
                                + "; choose one with --topic")
    return topics[0]


def extract_frames(bag: Path, out: Path, *, topic: Optional[str] = None, every: Optional[int] = None,
                   rate: Optional[float] = None, limit: Optional[int] = None) -> ExtractSummary:
    """Write the sampled frames of ``bag``'s image topic (and their camera_info) into ``out``.

    Raises:
        BagError: the bag cannot be read, or the topic is missing or ambiguous.
        InputError: ``every``/``rate``/``limit`` are invalid, or a frame cannot be decoded.
    """
    from PIL import Image

    if every is not None and rate is not None:
        raise InputError("give --every or --rate, not both")
    if every is not None and every < 1:
        raise InputError(f"--every must be >= 1, got {every}")
    if rate is not None and not rate > 0:
        raise InputError(f"--rate must be > 0 Hz, got {rate}")
    if limit is not None and limit < 1:
        raise InputError(f"--limit must be >= 1, got {limit}")
    every = every or 1
    period_ns = int(round(1e9 / rate)) if rate else 0
    reader = storage.open_reader(Path(bag))
    try:
        chosen = _pick_topic(reader, topic)
        info_topic = messages.camera_info_topic(chosen.topic, chosen.msgtype)
        info_conns = [c for c in reader.connections
                      if c.topic == info_topic and c.msgtype == messages.CAMERA_INFO]
        calib = _CalibrationIndex(reader, info_conns)
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        written: List[Path] = []
        n_info = 0
        index = 0
        last_kept: Optional[int] = None
        for conn, timestamp, data in reader.messages(connections=[c for c in reader.connections
                                                                   if c.topic == chosen.topic]):
            msg = messages.deserialize(data, conn.msgtype)
            stamp = messages.header_ns(msg) or int(timestamp)  # an unstamped driver: the record time
            i, index = index, index + 1
            if rate:
                if last_kept is not None and stamp - last_kept < period_ns:
                    continue
            elif i % every:
                continue
            last_kept = stamp
            try:
                rgb = messages.msg_to_rgb(msg, conn.msgtype)
            except InputError as exc:
                raise InputError(f"{bag} {conn.topic} frame {i} (stamp {frame_stem(stamp)}): {exc}") from None
            path = out / f"{frame_stem(stamp)}.png"
            Image.fromarray(np.ascontiguousarray(rgb)).save(path)
            written.append(path)
            info = calib.at(stamp)
            if info is not None:
                name = (msg.header.frame_id or "camera").strip("/").replace("/", "_") or "camera"
                path.with_suffix(".yaml").write_text(
                    f"# camera_info of {conn.topic} frame {frame_stem(stamp)} from {info_topic} in {bag}\n"
                    + camera_info_yaml(info, name))
                n_info += 1
            if limit is not None and len(written) >= limit:
                break
    finally:
        reader.close()
    return ExtractSummary(chosen.topic, chosen.msgtype, chosen.count, written, n_info, info_topic)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pspnet extract-frames", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bag", type=Path, help="rosbag2 directory (mcap or sqlite3)")
    p.add_argument("--out", type=Path, required=True, help="folder for the PNG frames (and camera_info YAMLs)")
    p.add_argument("--topic", default=None,
                   help="image topic (Image or CompressedImage); needed when the bag has several")
    pick = p.add_mutually_exclusive_group()
    pick.add_argument("--every", type=int, default=None, metavar="N", help="keep every N-th frame (default 1: all)")
    pick.add_argument("--rate", type=float, default=None, metavar="HZ",
                      help="keep at most HZ frames per second of header time")
    p.add_argument("--limit", type=int, default=None, help="stop after writing N frames")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = get_args_parser().parse_args(argv)
    try:
        s = extract_frames(args.bag, args.out, topic=args.topic, every=args.every, rate=args.rate,
                           limit=args.limit)
    except (InputError, messages.BagError) as exc:
        LOGGER.error("%s", exc)
        return 1
    info = (f", camera_info from {s.camera_info_topic} for {s.camera_info}" if s.camera_info
            else f", no camera_info ({s.camera_info_topic} not in the bag)")
    print(f"wrote {len(s.written)} of {s.frames_in_bag} frames of {s.topic} to {args.out}{info}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
