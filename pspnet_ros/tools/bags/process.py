"""``pspnet bag``: segment every frame of a rosbag2 offline into a new bag.

    pspnet bag drive_bag --out drive_seg --checkpoint auto
    pspnet bag drive_bag --out drive_seg.db3bag --format sqlite3 --image-topic /front/image_raw

The output holds every input message unchanged plus, for each image topic ``<ns>/<image>``:

    <ns>/segmentation/labels       sensor_msgs/Image mono8  class ids
    <ns>/segmentation/color        sensor_msgs/Image rgb8   palette colours
    <ns>/segmentation/overlay      sensor_msgs/Image rgb8   colours blended over the input
    <ns>/segmentation/drivable     sensor_msgs/Image mono8  0/255 drivable mask
    <ns>/segmentation/confidence   sensor_msgs/Image mono8  with --confidence
    <ns>/segmentation/camera_info  sensor_msgs/CameraInfo   scaled, when <ns>/camera_info exists
    <ns>/segmentation/class_info   std_msgs/String JSON     once, transient-local (latched)

the same topics the node publishes when it runs in namespace ``<ns>``, each message carrying its
input image's header and recorded at its input image's bag time.

Every frame goes through the engine with ``drop_policy="queue"`` (back-pressure, no drops) and
one frame per batch by default, so the result is deterministic. The bag is written next to OUT
under a hidden name and renamed at the end: Ctrl-C (or SIGTERM) finishes the frames in flight
and closes a bag that is complete up to the last finished frame (a second Ctrl-C removes it); any
other error removes the output. Exit status: 0 all frames, 1 error or some frames failed,
130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import queue
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from pspnet_ros.class_info import class_info_json
from . import calibration, messages, storage
from pspnet_ros.errors import InputError

LOGGER = logging.getLogger(__name__)

OUTPUT_TOPICS = ("labels", "color", "overlay", "drivable", "confidence")
_ENCODINGS = {"labels": "mono8", "color": "rgb8", "overlay": "rgb8", "drivable": "mono8",
              "confidence": "mono8"}


class Interrupted(KeyboardInterrupt):
    """Stop after the frames in flight and keep the bag (first Ctrl-C / SIGTERM)."""


class Aborted(KeyboardInterrupt):
    """Stop now and remove the output (second Ctrl-C / SIGTERM)."""


class _StopRequest:
    """Signal handler that turns the first SIGINT/SIGTERM into a flag checked between frames.

    Raising KeyboardInterrupt at an arbitrary bytecode could cut a frame's group of messages in
    half; the flag is only looked at before a new input message is read, so the bag always
    ends on a complete frame. A second signal aborts at once.
    """

    def __init__(self) -> None:
        self.requested = False
        self._old = {}

    def __call__(self, signum, frame) -> None:
        if self.requested:
            raise Aborted(f"signal {signum} received twice")
        self.requested = True
        LOGGER.warning("stopping after the frames in flight (press Ctrl-C again to discard "
                       "the output)")

    def __enter__(self) -> "_StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self)
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


@dataclass
class Summary:
    frames_total: int = 0
    frames_done: int = 0
    frames_failed: int = 0
    frames_written: int = 0  # frames whose input and outputs are in the bag
    messages_written: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    out: Optional[Path] = None
    failures: List[str] = field(default_factory=list)

    @property
    def fps(self) -> float:
        return self.frames_done / self.seconds if self.seconds > 0 else 0.0


@dataclass
class _Pending:
    """An input message waiting to be written, in bag order."""

    conn: object
    timestamp: int
    data: bytes
    seq: Optional[int] = None  # frame number for image messages
    done: bool = False
    stream: Optional["_Stream"] = None
    outputs: Dict[str, object] = field(default_factory=dict)


@dataclass
class _Stream:
    """One input image topic and the output connections derived from it."""

    topic: str
    msgtype: str
    ns: str
    info_topic: str
    conns: Dict[str, object] = field(default_factory=dict)
    camera_info: Dict[int, object] = field(default_factory=dict)  # header stamp -> msg
    last_info: object = None
    class_info_written: bool = False


def _copy_connection(writer, conn, ts):
    """Add ``conn`` of an input bag to the output with its own definition, hash and QoS."""
    ext = conn.ext
    qos = list(getattr(ext, "offered_qos_profiles", []) or [])
    fmt = getattr(ext, "serialization_format", "cdr")
    msgdef = conn.msgdef.data if conn.msgdef is not None else None
    if msgdef and conn.digest:
        return writer.add_connection(conn.topic, conn.msgtype, msgdef=msgdef, rihs01=conn.digest,
                                     serialization_format=fmt, offered_qos_profiles=qos)
    if conn.msgtype in ts.types:  # bags from before type hashes (Humble): use our definition
        return writer.add_connection(conn.topic, conn.msgtype, typestore=ts,
                                     serialization_format=fmt, offered_qos_profiles=qos)
    LOGGER.warning("not copying %s [%s]: the bag has no definition/type hash for it and the "
                   "type is unknown here", conn.topic, conn.msgtype)
    return None


def _output_msgs(result, in_header, ts) -> Dict[str, object]:
    msgs = {}
    for name in OUTPUT_TOPICS:
        arr = getattr(result, name, None)
        if arr is None:
            continue
        msg = messages.image_msg(np.asarray(arr), 0, "", encoding=_ENCODINGS[name])
        msgs[name] = ts.types[messages.IMAGE](header=in_header, height=msg.height, width=msg.width,
                                        encoding=msg.encoding, is_bigendian=0, step=msg.step,
                                        data=msg.data)
    return msgs


def process_bag(in_bag: Path, out_bag: Path, *, checkpoint: str = "auto", device: str = "auto",
                precision: str = "auto", backend: str = "auto", inference_size=None, image_topics: Sequence[str] = (),
                fmt: Optional[str] = None, output_resolution: str = "input",
                confidence: bool = False, overlay_alpha: float = 0.5,
                drivable_classes: Optional[Sequence[str]] = None, batch: int = 1,
                overwrite: bool = False, progress: bool = True,
                on_frame: Optional[Callable[[int, int], None]] = None,
                distro: str = storage.DEFAULT_DISTRO) -> Summary:
    """Segment every frame of ``in_bag`` into ``out_bag``; see the module docstring.

    ``on_frame(written, total)`` is called after each frame is written with its outputs (a
    callback that raises KeyboardInterrupt stops the run exactly like Ctrl-C).
    Raises BagError/InputError for unusable inputs; KeyboardInterrupt propagates after the
    partial bag has been closed (``Summary`` is then attached as ``exc.summary``).
    """
    from rosbags.rosbag2 import Writer
    from tqdm import tqdm

    from pspnet_ros.inference import EngineConfig, RealtimeEngine, Segmenter
    from pspnet_ros.paths import resolve_checkpoint, resolve_device

    in_bag, out_bag = Path(in_bag), Path(out_bag)
    if in_bag.resolve() == out_bag.resolve():
        raise messages.BagError("--out must differ from the input bag")
    if batch < 1:
        raise InputError(f"--batch must be >= 1, got {batch}")
    storage.check_distro(distro)
    if out_bag.exists() and not overwrite:  # fail before loading the model
        raise messages.BagError(f"{out_bag} exists; pass --overwrite or choose another --out")
    ts = messages.typestore()
    reader = storage.open_reader(in_bag)
    summary = Summary(out=out_bag)
    try:
        topics = storage.image_topics(reader, image_topics)
        fmt = fmt or (storage.default_format(distro) if distro == "humble" else storage.bag_format(in_bag))
        dev = resolve_device(device)
        ckpt = resolve_checkpoint(checkpoint, device=dev)
        seg = Segmenter.from_checkpoint(str(ckpt), device=dev, precision=precision, backend=backend,
                                        inference_size=inference_size, max_batch=batch)
        outputs = {"labels", "color", "overlay", "drivable"}
        if confidence:
            outputs.add("confidence")
        drivable = tuple(drivable_classes or seg.meta.get("drivable_classes") or ("road",))
        cfg = EngineConfig(drop_policy="queue", queue_size=max(2, 2 * batch),
                           output_resolution=output_resolution, overlay_alpha=overlay_alpha,
                           drivable_classes=drivable, outputs=frozenset(outputs), max_batch=batch)
        streams: Dict[str, _Stream] = {}
        info_to_stream: Dict[str, _Stream] = {}
        for t in topics:
            base = messages.image_base_topic(t.topic, t.msgtype)
            ns = messages.topic_namespace(base)
            s = _Stream(t.topic, t.msgtype, ns, messages.camera_info_topic(t.topic, t.msgtype))
            streams[t.topic] = s
            info_to_stream[s.info_topic] = s
        summary.frames_total = sum(t.count for t in topics)
        class_info = class_info_json(seg.meta, model_name=seg.model_name, palette=seg.palette,
                                        drivable_classes=drivable,
                                        inference_size=seg.inference_size)
        LOGGER.info("segmenting %d frames on %s with %s (%s) -> %s (%s)", summary.frames_total,
                    ", ".join(streams), ckpt, dev, out_bag, fmt)
        bar = tqdm(total=summary.frames_total, unit="frame", disable=not progress, desc="bag")

        results: "queue.Queue" = queue.Queue()
        engine = RealtimeEngine(seg, cfg, on_result=results.put, on_error=results.put)
        t0 = time.perf_counter()
        stopped = None  # the KeyboardInterrupt to re-raise once the partial bag is in place
        with storage.atomic_bag_dir(out_bag, overwrite=overwrite) as tmp:
            writer = Writer(tmp, version=storage.writer_version(distro), storage_plugin=storage.storage_plugin(fmt))
            writer.open()
            try:
                _run(reader, writer, engine, results, streams, info_to_stream, class_info, ts,
                     summary, bar, on_frame, outputs)
            except Aborted:
                writer.abort()
                raise
            except KeyboardInterrupt as exc:
                # The frames in flight were finished and written in _run: keep what is complete.
                summary.interrupted = True
                stopped = exc
            except BaseException:
                writer.abort()
                raise
            finally:
                bar.close()
                summary.seconds = time.perf_counter() - t0
            writer.set_custom_data("pspnet.complete", "false" if stopped else "true")
            writer.set_custom_data("pspnet.frames", f"{summary.frames_written}/{summary.frames_total}")
            writer.set_custom_data("pspnet.checkpoint", str(ckpt))
            writer.close()
            storage.finish_for_distro(tmp, distro)  # Humble's metadata v5 has no custom_data
        if stopped is not None:
            stopped.summary = summary  # type: ignore[attr-defined]
            raise stopped
    finally:
        reader.close()
    return summary


def _run(reader, writer, engine, results, streams, info_to_stream, class_info, ts, summary,
         bar, on_frame, outputs) -> None:
    """Feed the engine in bag order and write inputs + outputs in the same order."""
    from pspnet_ros.inference import FrameError

    out_conns = {}
    for c in reader.connections:
        key = (c.topic, c.msgtype)
        if key not in out_conns:
            out_conns[key] = _copy_connection(writer, c, ts)
    qos = [storage.qos_profile(reliable=True)]
    latched = [storage.qos_profile(reliable=True, transient_local=True, depth=1)]
    for s in streams.values():
        for name in (n for n in OUTPUT_TOPICS if n in outputs):
            s.conns[name] = writer.add_connection(messages.join_topic(s.ns, f"segmentation/{name}"),
                                                  messages.IMAGE, typestore=ts, offered_qos_profiles=qos)
        if any(c.topic == s.info_topic and c.msgtype == messages.CAMERA_INFO for c in reader.connections):
            s.conns["camera_info"] = writer.add_connection(
                messages.join_topic(s.ns, "segmentation/camera_info"), messages.CAMERA_INFO, typestore=ts,
                offered_qos_profiles=qos)
        s.conns["class_info"] = writer.add_connection(
            messages.join_topic(s.ns, "segmentation/class_info"), messages.STRING, typestore=ts,
            offered_qos_profiles=latched)

    pending: "deque[_Pending]" = deque()
    frames: Dict[int, tuple] = {}  # seq -> (stream, input msg, pending entry)
    seq_counter = 0

    def write(conn, timestamp, data):
        writer.write(conn, timestamp, data)
        summary.messages_written += 1

    def finish(item) -> None:
        """Handle one FrameResult / FrameError from the engine."""
        seq = item.context
        stream, msg, entry = frames.pop(seq)
        entry.done = True
        if isinstance(item, FrameError):
            error = item.error
            summary.frames_failed += 1
            text = f"{stream.topic} @ {messages.header_ns(msg) / 1e9:.6f}: {error}"
            summary.failures.append(text)
            LOGGER.error("frame failed (%s), its outputs are missing: %s",
                         getattr(item, "kind", "failed"), text)
        else:
            entry.outputs = _output_msgs(item, msg.header, ts)
            if "camera_info" in stream.conns:
                info = stream.camera_info.get(messages.header_ns(msg), stream.last_info)
                if info is not None:
                    in_size = ((msg.height, msg.width) if stream.msgtype == messages.IMAGE
                               else messages.compressed_size(msg))
                    try:
                        scaled = calibration.scale_camera_info(info, in_size, item.labels.shape[:2])
                    except InputError as exc:  # as the node: that frame's camera_info is skipped
                        summary.failures.append(f"{stream.topic} @ {messages.header_ns(msg) / 1e9:.6f}: "
                                                f"camera_info not written: {exc}")
                        LOGGER.warning("camera_info not written: %s", exc)
                    else:
                        entry.outputs["camera_info"] = ts.types[messages.CAMERA_INFO](
                            header=msg.header, height=scaled.height, width=scaled.width,
                            distortion_model=scaled.distortion_model, d=scaled.d, k=scaled.k,
                            r=scaled.r, p=scaled.p, binning_x=scaled.binning_x,
                            binning_y=scaled.binning_y, roi=scaled.roi)
            summary.frames_done += 1
        bar.update(1)

    def drain(block: bool = False) -> None:
        while True:
            try:
                item = results.get(timeout=0.05) if block else results.get_nowait()
            except queue.Empty:
                return
            finish(item)
            block = False

    def flush_pending() -> None:
        """Write the leading entries whose frames are finished (bag order is kept)."""
        while pending and (pending[0].seq is None or pending[0].done):
            e = pending.popleft()
            if e.conn is not None:
                write(e.conn, e.timestamp, e.data)
            if e.seq is not None:
                s = e.stream
                if not s.class_info_written:
                    write(s.conns["class_info"], e.timestamp,
                          messages.serialize(messages.string_msg(class_info)))
                    s.class_info_written = True
                for name, out_msg in e.outputs.items():
                    write(s.conns[name], e.timestamp, messages.serialize(out_msg))
                if e.outputs:
                    summary.frames_written += 1
                    if on_frame is not None:
                        on_frame(summary.frames_written, summary.frames_total)

    engine.start()
    with _StopRequest() as stop:
        try:
            for conn, timestamp, data in reader.messages():
                if stop.requested:
                    raise Interrupted("stop requested")
                entry = _Pending(out_conns.get((conn.topic, conn.msgtype)), timestamp, data)
                stream = streams.get(conn.topic)
                if stream is not None and conn.msgtype == stream.msgtype:
                    msg = messages.deserialize(data, conn.msgtype)
                    entry.seq, entry.stream = seq_counter, stream
                    seq_counter += 1
                    frames[entry.seq] = (stream, msg, entry)
                    pending.append(entry)
                    _submit(engine, stream, msg, entry.seq, finish)
                else:
                    if conn.msgtype == messages.CAMERA_INFO and conn.topic in info_to_stream:
                        s = info_to_stream[conn.topic]
                        info = messages.deserialize(data, conn.msgtype)
                        s.camera_info[messages.header_ns(info)] = info
                        s.last_info = info
                        if len(s.camera_info) > 64:  # only stamps near the frames in flight
                            s.camera_info.pop(next(iter(s.camera_info)))
                    pending.append(entry)
                drain()
                flush_pending()
            engine.flush()
            drain()
            flush_pending()
        except Aborted:
            raise
        except KeyboardInterrupt:
            # First Ctrl-C: let the frames in flight finish so the bag ends on a complete frame.
            # A second Ctrl-C while we wait raises Aborted and the caller removes the bag.
            LOGGER.warning("interrupted: finishing %d frame(s) in flight, then closing the bag",
                           len(frames))
            engine.flush()
            drain()
            flush_pending()
            raise
        finally:
            engine.stop()
    if frames or any(e.seq is not None for e in pending):
        raise RuntimeError(f"engine returned no result for {len(frames)} frame(s)")


def _submit(engine, stream, msg, seq, finish) -> None:
    """Hand one image message to the engine; undecodable frames count as failed."""
    from pspnet_ros.inference import FrameError

    stamp = messages.header_ns(msg)
    try:
        if stream.msgtype == messages.COMPRESSED:
            data, fmt, _, _ = messages.compressed_payload(msg)
            engine.submit_encoded(data, fmt, stamp, source_id=stream.topic, context=seq)
        else:
            img = messages.decode_image_msg(msg)
            accepted = engine.submit(img.array, stamp, source_id=stream.topic, bgr=img.bgr,
                                     context=seq)
            if accepted is False:  # "queue" never drops; if it did, the bag would be incomplete
                raise RuntimeError(f"engine dropped frame {seq} despite drop_policy=queue")
    except InputError as exc:
        finish(FrameError(stamp=stamp, source_id=stream.topic, context=seq, error=exc,
                          kind="bad_input"))


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pspnet bag", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("in_bag", type=Path, help="input rosbag2 directory (mcap or sqlite3)")
    p.add_argument("--out", type=Path, required=True, help="output bag directory to create")
    p.add_argument("--image-topic", action="append", default=[],
                   help="image topic to segment (repeatable; default: every Image and "
                        "CompressedImage topic)")
    p.add_argument("--checkpoint", default="auto",
                   help="checkpoint file, or auto for the shipped KITTI road model")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "fp16", "bf16", "int8"),
                   help="auto: int8 on CPU when the checkpoint's accuracy-checked .int8.onnx exists, else "
                        "fp32; fp16/bf16 on CUDA")
    p.add_argument("--backend", default="auto", choices=("auto", "torch", "onnxruntime", "openvino"))
    p.add_argument("--inference-size", type=int, nargs=2, metavar=("H", "W"), default=None,
                   help="network input size (default: the checkpoint's)")
    p.add_argument("--output-resolution", choices=("input", "network"), default="input")
    p.add_argument("--overlay-alpha", type=float, default=0.5)
    p.add_argument("--drivable-classes", nargs="+", default=None,
                   help="class names counted as drivable (default: the checkpoint's)")
    p.add_argument("--confidence", action="store_true", help="also write segmentation/confidence")
    p.add_argument("--format", choices=storage.FORMATS, default=None,
                   help="output storage (default: same as the input; sqlite3 with --distro humble)")
    p.add_argument("--distro", choices=storage.DISTROS, default=storage.DEFAULT_DISTRO,
                   help=f"ROS 2 distro that will play the bag (default {storage.DEFAULT_DISTRO}: metadata "
                        "version 9, read by Jazzy and Kilted; humble: version 5)")
    p.add_argument("--batch", type=int, default=1,
                   help="frames per forward pass (default 1: results independent of timing; "
                        "larger is faster on GPU but batch-dependent in the last bits)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    from pspnet_ros.inference.int8 import Int8Unavailable

    args = get_args_parser().parse_args(argv)
    try:
        summary = process_bag(
            args.in_bag, args.out, checkpoint=args.checkpoint, device=args.device,
            precision=args.precision, backend=args.backend,
            inference_size=tuple(args.inference_size) if args.inference_size else None,
            image_topics=args.image_topic, fmt=args.format,
            output_resolution=args.output_resolution, confidence=args.confidence,
            overlay_alpha=args.overlay_alpha, drivable_classes=args.drivable_classes,
            batch=args.batch, overwrite=args.overwrite, progress=not args.no_progress,
            distro=args.distro)
    except KeyboardInterrupt as exc:
        s = getattr(exc, "summary", None)
        if s is None:
            LOGGER.error("interrupted before the first frame was written: no output at %s",
                         args.out)
        else:
            LOGGER.warning("interrupted: %s holds the first %d of %d frames, each with all its "
                           "outputs (metadata custom_data pspnet.complete=false); run again to "
                           "process the rest", args.out, s.frames_written, s.frames_total)
        return 130
    except (messages.BagError, InputError, FileNotFoundError, Int8Unavailable) as exc:
        LOGGER.error("%s", exc)
        return 1
    except Exception as exc:  # noqa: BLE001 - report, the partial output is already removed
        LOGGER.exception("failed: %s; no output written to %s", exc, args.out)
        return 1
    print(f"{summary.frames_done}/{summary.frames_total} frames in {summary.seconds:.1f} s "
          f"({summary.fps:.2f} frames/s), {summary.frames_failed} failed -> {summary.out}")
    from pspnet_ros.tools.bags.make_bag import describe

    print(describe(summary.out))
    return 1 if summary.frames_failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
