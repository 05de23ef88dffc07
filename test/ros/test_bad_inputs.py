"""A corpus of bad (and valid-but-unusual) input frames sent to running node processes over DDS.

Two node processes for the whole module, started together: ``/raw`` subscribes
``sensor_msgs/Image`` and ``/jpeg`` subscribes ``sensor_msgs/CompressedImage`` (the transport
is one per node). Each case is published once with a reliable publisher, like a camera driver;
after every bad frame the test waits until /diagnostics counts it (the input subscription keeps
only the last frame, so sending the next one earlier could replace it unseen), then sends a good
KITTI frame, which must be answered with its exact stamp.

Checked: no output for any bad frame, an output for every good one, the bad-input counter in
/diagnostics equals the number of bad frames, a log line naming each kind of problem (repeats of
one kind within the throttle period suppressed), and both nodes still alive at the end.
"""

from __future__ import annotations

import signal
import struct
import time
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

import cv2
import numpy as np
import pytest

import rclpy  # noqa: F401  (the ROS layer must run: a missing rclpy is an error, not a skip)

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from sensor_msgs.msg import CameraInfo, CompressedImage, Image  # noqa: E402

from ros_harness import (NodeProcess, RosClient, as_array, diag_values, domain_id_for,  # noqa: E402
                         find_status, image_msg, kitti_camera_info, reliable_qos, stamp_ns, warm_up)

T0 = 1_700_000_200_000_000_000
PARAMS = {"device": "cpu", "inference_size": [64, 192], "qos_reliability": "reliable",
          "publish_color": False, "publish_overlay": False, "publish_drivable": False,
          "diagnostics_period": 0.1}


# ----------------------------------------------------------------------------- frame builders

def raw(height: int, width: int, encoding: str, step: int, data: bytes, *, bigendian: int = 0,
        stamp: Optional[int] = None, frame_id: str = "camera") -> Image:
    """Return an Image with exactly these fields (nothing derived or checked)."""
    msg = image_msg(np.zeros((1, 1, 3), np.uint8), 0, frame_id)
    msg.height, msg.width, msg.encoding, msg.step, msg.is_bigendian = height, width, encoding, step, bigendian
    msg.data = data
    if stamp is not None:
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
    return msg


def bayer(rgb: np.ndarray, pattern: str) -> np.ndarray:
    """(H, W) mosaic: ``pattern`` names the 2x2 tile's colours row by row, e.g. 'rggb'."""
    chan = {"r": 0, "g": 1, "b": 2}
    out = np.empty(rgb.shape[:2], np.uint8)
    for k, c in enumerate(pattern):
        dy, dx = divmod(k, 2)
        out[dy::2, dx::2] = rgb[dy::2, dx::2, chan[c]]
    return out


def yuv422(rgb: np.ndarray, order: str) -> np.ndarray:
    """Packed 4:2:2 bytes, (H, W*2): 'uyvy' (ROS yuv422) or 'yuyv' (ROS yuv422_yuy2)."""
    yuv = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2YUV).astype(np.uint16)
    y = yuv[..., 0]
    u = ((yuv[:, 0::2, 1] + yuv[:, 1::2, 1]) // 2).astype(np.uint8)
    v = ((yuv[:, 0::2, 2] + yuv[:, 1::2, 2]) // 2).astype(np.uint8)
    out = np.empty((rgb.shape[0], rgb.shape[1] // 2, 4), np.uint8)
    if order == "uyvy":
        out[..., 0], out[..., 1], out[..., 2], out[..., 3] = u, y[:, 0::2], v, y[:, 1::2]
    else:
        out[..., 0], out[..., 1], out[..., 2], out[..., 3] = y[:, 0::2], u, y[:, 1::2], v
    return out.reshape(rgb.shape[0], -1)


def padded(pixels: np.ndarray, pad: int) -> np.ndarray:
    """Rows of ``pixels`` (H, W, C) followed by ``pad`` junk bytes each: (H, W*C + pad)."""
    h = pixels.shape[0]
    rows = pixels.reshape(h, -1)
    return np.concatenate([rows, np.full((h, pad), 0xAB, np.uint8)], axis=1)


def from_rows(rows: np.ndarray, width: int, encoding: str, **kw: Any) -> Image:
    return raw(rows.shape[0], width, encoding, rows.shape[1], rows.tobytes(), **kw)


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_bomb(width: int, height: int, with_data: bool) -> bytes:
    """Return a PNG announcing width x height 1-bit gray pixels.

    Header only, or with the whole (all zero) image deflated, a few hundred kB that would inflate to
    gigabytes.
    """
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    body = b""
    if with_data:
        row = b"\x00" * (1 + (width + 7) // 8)
        comp = zlib.compressobj(9)
        body = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", body)
            + png_chunk(b"IEND", b""))


def jpeg_segments(data: bytes) -> Dict[int, List[tuple]]:
    """Marker -> [(offset, length)] for the header segments of a baseline JPEG (up to SOS)."""
    segs: Dict[int, List[tuple]] = {}
    i = 2
    while i < len(data):
        marker, length = data[i + 1], int.from_bytes(data[i + 2:i + 4], "big")
        segs.setdefault(marker, []).append((i, length))
        if marker == 0xDA:
            break
        i += 2 + length
    return segs


def encode(rgb: np.ndarray, ext: str) -> bytes:
    ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return buf.tobytes()


def compressed(data: bytes, fmt: str, stamp: Optional[int] = None, frame_id: str = "camera") -> CompressedImage:
    msg = CompressedImage(format=fmt)
    msg.header.frame_id = frame_id
    if stamp is not None:
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
    msg.data = data
    return msg


# ----------------------------------------------------------------------------- the harness

@dataclass
class Case:
    name: str
    msg: Any  # Image or CompressedImage; its stamp is set by the runner unless set here
    log: str = ""  # bad: a fragment of the logged reason (same for one kind); valid: ""
    size: Optional[tuple] = None  # valid: (h, w) of the answer
    keep_stamp: bool = False  # the case is about the stamp: send it as built

    @property
    def bad(self) -> bool:
        return bool(self.log)


@dataclass
class Corpus:
    """One node process, its camera publisher and what came back."""

    node: NodeProcess
    ns: str
    client: RosClient
    publish: Callable[[Any], None]
    good: Callable[[int], Any]
    good_size: tuple
    labels: Any = None
    diag: Any = None
    bad_stamps: List[int] = field(default_factory=list)
    n_bad: int = 0
    next_stamp: int = T0

    @property
    def fqn(self) -> str:
        return f"{self.ns}/segmentation_node"

    def stamp(self) -> int:
        self.next_stamp += 1_000_003  # odd nanoseconds: a float round trip would show
        return self.next_stamp

    def counter(self, key: str, at_least: int, what: str) -> int:
        def ok(m):
            s = find_status(m, self.fqn)
            return s is not None and int(diag_values(s)[key]) >= at_least
        msg = self.diag.wait_for(ok, 30, f"{self.fqn} {key} >= {at_least} ({what})\n" + self.node.output()[-3000:])
        return int(diag_values(find_status(msg, self.fqn))[key])

    def latest(self) -> Dict[str, str]:
        """Values of this node's first diagnostics message published after this call."""
        n = len(self.diag.items)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for _, m in self.diag.items[n:]:
                s = find_status(m, self.fqn)
                if s is not None:
                    return diag_values(s)
            time.sleep(0.05)
        raise AssertionError("no fresh diagnostics from " + self.fqn)

    def answered(self, stamp: int, what: str) -> Any:
        return self.labels.wait_for(lambda m: stamp_ns(m.header) == stamp, 60,
                                    f"labels of {what}\n" + self.node.output()[-3000:])

    def send_good(self, after: str) -> None:
        stamp = self.stamp()
        self.publish(self.good(stamp))
        msg = self.answered(stamp, f"the good frame after {after}")
        assert (msg.height, msg.width) == self.good_size

    def run(self, case: Case) -> None:
        msg = case.msg
        if not case.keep_stamp:
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(self.stamp(), 1_000_000_000)
        stamp = stamp_ns(msg.header)
        self.publish(msg)
        if case.bad:
            self.n_bad += 1
            self.bad_stamps.append(stamp)
            self.counter("bad input (total)", self.n_bad, case.name)
            self.send_good(case.name)
        else:
            out = self.answered(stamp, case.name)
            assert (out.height, out.width) == case.size, case.name
            assert out.header.frame_id == msg.header.frame_id, case.name
            assert as_array(out).max() <= 1, case.name  # two classes

    def check_end(self, cases: List[Case]) -> None:
        answered = {stamp_ns(m.header) for m in self.labels.messages}
        assert not answered & set(self.bad_stamps), "a bad frame was answered"
        values = self.latest()
        assert int(values["bad input (total)"]) == self.n_bad, values
        assert int(values["failed (total)"]) == 0, values
        out = self.node.output()
        missing = [c.name for c in cases if c.bad and c.log not in out]
        assert not missing, f"no log line for {missing}:\n{out}"
        assert "Traceback" not in out, out
        assert self.node.proc.poll() is None, "the node exited:\n" + out


@pytest.fixture(scope="module")
def domain():
    return domain_id_for(__name__)


@pytest.fixture(scope="module")
def nodes(tmp_path_factory, domain, tiny_checkpoint):
    tmp = tmp_path_factory.mktemp("bad_inputs")
    common = {"checkpoint": str(tiny_checkpoint), **PARAMS}
    procs = {"raw": NodeProcess(tmp, domain, common, namespace="/raw", name="raw"),
             "jpeg": NodeProcess(tmp, domain, {**common, "input_transport": "compressed"},
                                 namespace="/jpeg", name="jpeg")}
    try:
        for p in procs.values():
            p.wait_for_output("serving 1 camera", timeout=120)
        yield procs
    finally:
        for p in procs.values():
            p.stop(signal.SIGINT)


@pytest.fixture(scope="module")
def client(domain, nodes):
    c = RosClient(domain)
    yield c
    c.close()


@pytest.fixture(scope="module")
def good_frame(kitti_frames):
    return np.ascontiguousarray(kitti_frames[0][1][::2, ::2])  # a real KITTI frame at half size


def corpus(client, node, ns, msg_type, topic, good, good_size) -> Corpus:
    pub = client.node.create_publisher(msg_type, f"{ns}/{topic}", reliable_qos(10))
    c = Corpus(node, ns, client, pub.publish, good, good_size)
    c.labels, _ = client.collect(Image, f"{ns}/segmentation/labels", reliable_qos(100))
    c.diag, _ = client.collect(DiagnosticArray, "/diagnostics", reliable_qos(100))
    client.wait_until(lambda: pub.get_subscription_count() > 0, 60, f"{ns} to subscribe {topic}")
    warm_up(lambda s: pub.publish(good(s)), [c.labels])
    return c


# ----------------------------------------------------------------------------- raw Image corpus

def raw_cases(rgb: np.ndarray, full: np.ndarray) -> List[Case]:
    h, w = rgb.shape[:2]
    odd = np.ascontiguousarray(full[:101, :333])
    rgba = np.concatenate([rgb[..., ::-1], np.full((h, w, 1), 255, np.uint8)], axis=2)  # bgra
    cases = [
        # refused: sizes and data
        Case("data shorter than step*height", raw(8, 10, "rgb8", 30, bytes(200)), "data has"),
        Case("data longer than step*height", raw(8, 10, "rgb8", 30, bytes(300)), "data has"),
        Case("10000x9000 claimed with 16 bytes", raw(9000, 10000, "rgb8", 30000, bytes(16)), "data has"),
        Case("step < width*channels", raw(8, 10, "rgb8", 20, bytes(160)), "step 20 is smaller"),
        Case("height 0", raw(0, 10, "rgb8", 30, b""), "empty image"),
        Case("width 0", raw(8, 0, "rgb8", 0, b""), "empty image"),
        Case("100000x100000 claimed with 16 bytes", raw(100000, 100000, "rgb8", 300000, bytes(16)),
             "image too large"),
        # refused: encodings
        Case("unknown encoding", raw(8, 10, "hsv8", 30, bytes(240)), "unsupported encoding 'hsv8'"),
        Case("empty encoding", raw(8, 10, "", 30, bytes(240)), "missing encoding"),
        Case("encodings are case-sensitive", raw(8, 10, "RGB8", 30, bytes(240)), "case-sensitive"),
        Case("32FC1 depth", raw(8, 10, "32FC1", 40, bytes(320)), "32-bit float matrix"),
        Case("16UC1 depth", raw(8, 10, "16UC1", 20, bytes(160)), "16-bit unsigned matrix"),
        Case("mono16", raw(8, 10, "mono16", 20, bytes(160)), "16-bit mono"),
        Case("mono16 big-endian", raw(8, 10, "mono16", 20, bytes(160), bigendian=1), "16-bit mono"),
        Case("rgb16 big-endian", raw(8, 10, "rgb16", 60, bytes(480), bigendian=1), "16-bit colour"),
        Case("bayer_rggb16", raw(8, 10, "bayer_rggb16", 20, bytes(160)), "16-bit Bayer"),
        Case("8UC3 has no channel order", raw(8, 10, "8UC3", 30, bytes(240)), "no channel order"),
        Case("yuv422 with an odd width", raw(8, 9, "yuv422", 18, bytes(144)), "needs an even width"),
        # refused: headers
        Case("zero stamp", image_msg(rgb, 0, "camera"), "no stamp", keep_stamp=True),
        Case("negative stamp", image_msg(rgb, 0, "camera"), "negative stamp", keep_stamp=True),
        Case("nanosec >= 1e9", image_msg(rgb, 0, "camera"), "not normalized", keep_stamp=True),
        Case("empty frame_id", image_msg(rgb, 0, ""), "empty header.frame_id"),
        # valid, answered at their own size
        Case("bayer_rggb8", from_rows(bayer(rgb, "rggb"), w, "bayer_rggb8"), size=(h, w)),
        Case("bayer_bggr8", from_rows(bayer(rgb, "bggr"), w, "bayer_bggr8"), size=(h, w)),
        Case("bayer_gbrg8", from_rows(bayer(rgb, "gbrg"), w, "bayer_gbrg8"), size=(h, w)),
        Case("bayer_grbg8", from_rows(bayer(rgb, "grbg"), w, "bayer_grbg8"), size=(h, w)),
        Case("yuv422 (UYVY)", from_rows(yuv422(rgb[:, :w // 2 * 2], "uyvy"), w // 2 * 2, "yuv422"),
             size=(h, w // 2 * 2)),
        Case("yuv422_yuy2", from_rows(yuv422(rgb[:, :w // 2 * 2], "yuyv"), w // 2 * 2, "yuv422_yuy2"),
             size=(h, w // 2 * 2)),
        Case("rgb8 with padded rows", from_rows(padded(rgb, 5), w, "rgb8"), size=(h, w)),
        Case("bgra8 with padded rows", from_rows(padded(rgba, 12), w, "bgra8"), size=(h, w)),
        Case("rgb8 flagged big-endian (8-bit: no byte order)", from_rows(rgb.reshape(h, -1), w, "rgb8",
                                                                        bigendian=1), size=(h, w)),
        Case("mono8", from_rows(np.ascontiguousarray(rgb[..., 1]), w, "mono8"), size=(h, w)),
        Case("1x1", raw(1, 1, "rgb8", 3, bytes([10, 200, 30])), size=(1, 1)),
        # sudden resolution changes: full size, an odd size, back to half size
        Case("resolution up to 1242x375", image_msg(full, 0, "camera"), size=full.shape[:2]),
        Case("resolution down to 333x101", image_msg(odd, 0, "camera"), size=(101, 333)),
        Case("resolution back to half size", image_msg(rgb, 0, "camera"), size=(h, w)),
    ]
    by_name = {c.name: c for c in cases}
    by_name["negative stamp"].msg.header.stamp.sec = -5
    by_name["nanosec >= 1e9"].msg.header.stamp.sec = 1_700_000_000
    by_name["nanosec >= 1e9"].msg.header.stamp.nanosec = 1_500_000_000
    return cases


def test_raw_image_corpus(client, nodes, good_frame, kitti_frames):
    rgb, full = good_frame, kitti_frames[1][1]
    h, w = rgb.shape[:2]
    c = corpus(client, nodes["raw"], "/raw", Image, "image",
               lambda s: image_msg(rgb, s, "kitti"), (h, w))
    cases = raw_cases(rgb, full)
    start = time.monotonic()
    for case in cases:
        c.run(case)

    # camera_info that does not describe the image: the labels are still answered (the image is
    # fine), the scaled camera_info is not published, and the mismatch is counted and logged.
    info_out, _ = client.collect(CameraInfo, "/raw/segmentation/camera_info", reliable_qos(20))
    info_pub = client.node.create_publisher(CameraInfo, "/raw/camera_info", reliable_qos(5))
    matching = kitti_camera_info(0, "kitti", h, w)

    def send_with_info(info):
        for _ in range(3):  # camera_info and image are separate topics: let the info land first
            info_pub.publish(info)
            time.sleep(0.1)
        stamp = c.stamp()
        c.publish(image_msg(rgb, stamp, "kitti"))
        return stamp

    # A matching camera_info is scaled and republished (this also waits for the connections).
    warm_up(lambda s: (info_pub.publish(matching), c.publish(image_msg(rgb, s, "kitti"))), [info_out])
    infos = [("camera_info for another resolution", kitti_camera_info(0, "kitti", 375, 1242),
              "camera_info describes 1242x375 images but the image is 621x188"),
             ("uncalibrated camera_info (0x0)", kitti_camera_info(0, "kitti", 0, 0), "width/height 0")]
    for n, (name, info, fragment) in enumerate(infos, 1):
        stamp = send_with_info(info)
        c.answered(stamp, name)
        c.counter("camera_info mismatches (total)", n, name)
        assert not [m for m in info_out.messages if stamp_ns(m.header) == stamp], name
        c.node.wait_for_output(fragment, timeout=10)
    stamp = send_with_info(matching)
    scaled = info_out.wait_for(lambda m: stamp_ns(m.header) == stamp, 60, "camera_info after a matching one")
    assert (scaled.height, scaled.width) == (h, w)

    c.check_end(cases)
    assert int(c.latest()["camera_info mismatches (total)"]) == 2
    n_bad = sum(case.bad for case in cases)
    print(f"raw corpus: {n_bad} bad + {len(cases) - n_bad} valid-but-unusual frames + 2 camera_info "
          f"mismatches in {time.monotonic() - start:.1f} s; every good frame answered")
    assert n_bad >= 20
    # Throttled per kind: three 'data has N bytes' frames in a row make fewer than three lines,
    # while every other kind still got its own line (checked by check_end).
    out = c.node.output()
    assert 1 <= out.count("data has") < 3, out


# ----------------------------------------------------------------------------- compressed corpus

def compressed_cases(rgb: np.ndarray, full: np.ndarray) -> List[Case]:
    jpg = encode(rgb, ".jpg")
    png = encode(rgb[::2, ::2], ".png")
    segs = jpeg_segments(jpg)
    no_huffman = bytearray(jpg)
    for off, length in segs[0xC4]:
        no_huffman[off + 4:off + 2 + length] = bytes(length - 2)
    sos_off, sos_len = segs[0xDA][0]
    bad_scan_header = bytearray(jpg)
    bad_scan_header[sos_off + 4:sos_off + 2 + sos_len] = b"\xff" * (sos_len - 2)
    sof_off, _ = segs[0xC0][0]
    zero_width = bytearray(jpg)
    zero_width[sof_off + 7:sof_off + 9] = b"\x00\x00"
    bad_png = bytearray(png)
    bad_png[120:220] = bytes(100)  # inside the deflated pixel data
    gray = cv2.imencode(".jpg", rgb[..., 1])[1].tobytes()
    return [
        Case("corrupt JPEG (Huffman tables zeroed)", compressed(bytes(no_huffman), "jpeg"), "corrupt JPEG data"),
        Case("corrupt JPEG (scan header)", compressed(bytes(bad_scan_header), "jpeg"), "corrupt JPEG data"),
        Case("truncated JPEG", compressed(jpg[: len(jpg) // 2], "jpeg"), "corrupt JPEG data"),
        Case("JPEG headers only", compressed(jpg[:sos_off], "jpeg"), "corrupt JPEG data"),
        Case("JPEG with a 0-pixel frame header", compressed(bytes(zero_width), "jpeg"), "frame header says"),
        Case("JPEG start marker then text", compressed(b"\xff\xd8" + b"not a jpeg " * 20, "jpeg"),
             "no frame header (SOF)"),
        Case("corrupt PNG", compressed(bytes(bad_png), "png"), "corrupt PNG data"),
        Case("truncated PNG", compressed(png[: len(png) // 2], "png"), "corrupt PNG data"),
        Case("PNG cut inside its header", compressed(png[:20], "png"), "PNG data truncated"),
        Case("non-image bytes", compressed(b"GIF89a" + bytes(200), "jpeg"), "neither JPEG nor PNG"),
        Case("empty data", compressed(b"", "jpeg"), "encoded image is empty"),
        Case("unknown format", compressed(jpg, "tiff"), "unsupported compressed format 'tiff'"),
        Case("compressedDepth", compressed(png, "16UC1; compressedDepth png"), "depth stream"),
        Case("empty format, not an image", compressed(b"hello" * 10, ""), "empty compressed format"),
        Case("format png, data JPEG", compressed(jpg, "png"), "format says png but the data is jpeg"),
        Case("PNG bomb, header only (100000x100000)", compressed(png_bomb(100000, 100000, False), "png"),
             "decompression bomb"),
        Case("PNG bomb, real (30000x30000 deflated zeros)", compressed(png_bomb(30000, 30000, True), "png"),
             "decompression bomb"),
        Case("zero stamp", compressed(jpg, "jpeg", stamp=0), "no stamp", keep_stamp=True),
        Case("empty frame_id", compressed(jpg, "jpeg", frame_id=""), "empty header.frame_id"),
        # valid
        Case("PNG", compressed(png, "png"), size=rgb[::2, ::2].shape[:2]),
        Case("image_transport format string", compressed(jpg, "bgr8; jpeg compressed bgr8"), size=rgb.shape[:2]),
        Case("empty format, JPEG data (sniffed)", compressed(jpg, ""), size=rgb.shape[:2]),
        Case("grayscale JPEG", compressed(gray, "jpeg"), size=rgb.shape[:2]),
        Case("resolution up to 1242x375", compressed(encode(full, ".jpg"), "jpeg"), size=full.shape[:2]),
        Case("resolution back to half size", compressed(jpg, "jpeg"), size=rgb.shape[:2]),
    ]


def test_compressed_image_corpus(client, nodes, good_frame, kitti_frames):
    rgb, full = good_frame, kitti_frames[1][1]
    jpg = encode(rgb, ".jpg")
    c = corpus(client, nodes["jpeg"], "/jpeg", CompressedImage, "image/compressed",
               lambda s: compressed(jpg, "jpeg", stamp=s, frame_id="kitti"), rgb.shape[:2])
    cases = compressed_cases(rgb, full)
    bomb = next(case for case in cases if case.name.startswith("PNG bomb, real"))
    assert len(bomb.msg.data) < 200_000  # tiny on the wire, 900 M pixels announced
    start = time.monotonic()
    for case in cases:
        c.run(case)
    c.check_end(cases)
    n_bad = sum(case.bad for case in cases)
    print(f"compressed corpus: {n_bad} bad + {len(cases) - n_bad} valid frames in "
          f"{time.monotonic() - start:.1f} s; every good frame answered")


def test_both_nodes_survived_and_stop_cleanly(nodes):
    for name, proc in nodes.items():
        assert proc.proc.poll() is None, f"{name} node died:\n{proc.output()}"
        rc = proc.stop(signal.SIGTERM)
        assert rc == 0 and "Traceback" not in proc.output(), proc.output()
