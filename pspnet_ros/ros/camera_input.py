"""Camera input: subscriptions with QoS matching, admission of frames, the loss meter.

Per camera: ``image`` (or ``image/compressed``) and ``camera_info`` subscriptions, re-matched to
the publishers' offered reliability while ``qos_reliability`` is auto; each frame is counted,
checked for losses (stamp gaps, sequence numbers), admitted or not (paused, ``max_rate``, no
subscribers), converted without copying and handed to the engine (latest frame wins). Mixed into
the node (:class:`CameraInputs`); the executor thread runs it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Tuple

from rclpy import subscription as rclpy_subscription
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from ..errors import InputError
import rclpy

from . import diagnostics, qos
from .conversions import check_header, compressed_format, image_to_numpy
from .log_throttle import problem_kind
from .loss_meter import LossMeter
from .transport_hint import large_best_effort_hint

try:  # Iron and later
    from rclpy.event_handler import SubscriptionEventCallbacks
except ImportError:  # Humble
    try:
        from rclpy.qos_event import SubscriptionEventCallbacks
    except ImportError:
        SubscriptionEventCallbacks = None
# rclpy passes (msg, message info) to two-argument callbacks since Iron; Humble's does not.
# Jazzy's rclpy (7.1) has the two-argument callbacks but not yet the MessageInfo type (Kilted's
# does), so look for the callback kind itself.
MESSAGE_INFO = (hasattr(rclpy_subscription, "MessageInfo")
                or hasattr(getattr(rclpy_subscription.Subscription, "CallbackType", None), "WithMessageInfo"))

QOS_CHECK_PERIOD_S = 0.5
BAD_INPUT_LOG_PERIOD_S = 5.0  # one log line per kind of bad frame per period


@dataclass(frozen=True)
class FrameContext:
    """Travels with a frame through the engine (opaque to it) back to the publishers."""

    camera: int
    header: Header
    info: Optional[CameraInfo]
    size: Optional[Tuple[int, int]]  # (h, w) of the input frame; None until decoded (compressed)


class Camera:
    """One camera's topics, statistics and rate limiter."""

    def __init__(self, index: int, namespace: str) -> None:
        self.index = index
        self.namespace = namespace
        self.prefix = f"{namespace}/" if namespace else ""
        self.source_id = namespace or "default"
        self.stats = diagnostics.CameraStats()
        self.subscription: Any = None
        self.reliability: Optional[Any] = None
        self.input_topic = ""
        self.info: Optional[CameraInfo] = None
        self.info_subscription: Any = None
        self.publishers: Dict[str, Any] = {}
        self.info_publisher: Any = None
        self.class_info_publisher: Any = None
        self.loss = LossMeter()
        self.bev: Any = None  # bev_output.BevOutput when bev.enable
        self.transport_hint = ""  # set while subscribed best effort on a transport that loses large frames
        self._next_due = 0.0

    def rate_allows(self, max_rate: float, now: float) -> bool:
        """Token-bucket-like cap: keeps the average at max_rate without drifting below it."""
        if max_rate <= 0:
            return True
        period = 1.0 / max_rate
        if now < self._next_due:
            return False
        # Schedule from the due time (not from `now`) so jitter does not lower the rate; after a
        # pause, restart from now instead of bursting to catch up.
        self._next_due = self._next_due + period if now - self._next_due < period else now + period
        return True


def _sequence(info: Optional[Dict[str, Any]]) -> Tuple[Optional[int], Optional[bytes]]:
    """(publication sequence number, publisher gid bytes) from rclpy message info, each or None.

    Kilted's rclpy gives both; Jazzy's gives the sequence number without the gid (the loss
    meter then tells publishers apart by their sequence numbers and stamps); Humble's neither.
    """
    if not info:
        return None, None
    seq = info.get("publication_sequence_number") or None
    gid = info.get("publisher_gid")
    if isinstance(gid, dict):
        gid = gid.get("data")
    gid = bytes(gid) if gid else b""
    return seq, (gid if any(gid) else None)  # an all-zero gid names no publisher


def stamp_seconds(header: Header) -> float:
    return header.stamp.sec + header.stamp.nanosec * 1e-9


class CameraInputs:
    """The node's input side: subscribe the cameras, follow their QoS, admit and submit frames."""

    def _resolve_input_topic(self, cam: Camera) -> None:
        base = self.resolve_topic_name(f"{cam.prefix}image")
        cam.input_topic = base + "/compressed" if self.params.input_transport == "compressed" else base

    def _create_subscriptions(self, cam: Camera) -> None:
        cam.info_subscription = self.create_subscription(
            CameraInfo, f"{cam.prefix}camera_info", self._input_callback(cam, self._on_camera_info),
            qos.camera_info_qos())
        reliability = self._forced
        if reliability is None:
            reliability = qos.matching_reliability(self._offered(cam)) or qos.RELIABLE
        self._subscribe(cam, reliability)

    def _subscribe(self, cam: Camera, reliability: Any) -> None:
        if cam.subscription is not None:
            self.destroy_subscription(cam.subscription)
        compressed = self.params.input_transport == "compressed"
        msg_type = CompressedImage if compressed else Image
        callback = self._on_compressed if compressed else self._on_image
        kwargs: Dict[str, Any] = {}
        if SubscriptionEventCallbacks is not None:
            kwargs["event_callbacks"] = SubscriptionEventCallbacks(
                message_lost=lambda info, c=cam: c.stats.count("lost_rmw", int(info.total_count_change)))
        try:
            cam.subscription = self.create_subscription(msg_type, cam.input_topic,
                                                        self._input_callback(cam, callback),
                                                        qos.input_qos(reliability), **kwargs)
        except Exception as exc:  # an RMW without the message-lost event: stamps still count losses
            if not kwargs:
                raise
            self.get_logger().info(f"{cam.input_topic}: no message-lost events from this RMW ({exc})")
            cam.subscription = self.create_subscription(msg_type, cam.input_topic,
                                                        self._input_callback(cam, callback),
                                                        qos.input_qos(reliability))
        cam.reliability = reliability
        self._say_transport_hint(cam)

    def _say_transport_hint(self, cam: Camera) -> None:
        """Best effort: warn (log and /diagnostics) when the middleware loses large frames as set up.

        Fast DDS needs a transport setting for best-effort frames of ~1 MB and more (Jazzy's
        2.14 a different one than Kilted's 3.x); :mod:`.transport_hint` names it.
        """
        hint = ""
        if cam.reliability == qos.BEST_EFFORT:
            hint = large_best_effort_hint(rclpy.get_rmw_implementation_identifier())
            if hint and hint != cam.transport_hint:
                self.get_logger().warning(f"{cam.input_topic}: subscribed best effort; {hint}")
        cam.transport_hint = hint

    @staticmethod
    def _input_callback(cam: Camera, callback: Callable[..., None]) -> Callable[..., None]:
        """Wrap ``callback(cam, msg, info)`` for the image subscription.

        Where rclpy passes message info (Iron and later: a two-argument callback), its
        publication sequence numbers count exactly the samples the keep-last queue replaced;
        Humble's rclpy passes the message only and the stamps alone count losses.
        """
        if MESSAGE_INFO:
            return lambda m, info: callback(cam, m, info)
        return lambda m: callback(cam, m, None)

    def _on_camera_info(self, cam: Camera, msg: CameraInfo, info: Optional[Dict[str, Any]] = None) -> None:
        cam.info = msg
        seq, gid = _sequence(info)
        cam.loss.camera_info(stamp_seconds(msg.header), seq=seq, publisher=gid)

    def _offered(self, cam: Camera) -> List[Any]:
        return [i.qos_profile.reliability for i in self.get_publishers_info_by_topic(cam.input_topic)]

    def _check_qos(self) -> None:
        """qos_reliability auto: follow the publishers' offered reliability as they come and go."""
        for cam in self._cameras:
            wanted = qos.matching_reliability(self._offered(cam))
            # No publishers: keep the current subscription (do not flap while a camera restarts).
            if wanted is not None and wanted != cam.reliability:
                self.get_logger().info(
                    f"{cam.input_topic}: publishers offer {qos.name(wanted)}; subscribing {qos.name(wanted)}"
                    + (" (large frames over UDP may be lost: see README troubleshooting)"
                       if wanted == qos.BEST_EFFORT else ""))
                self._subscribe(cam, wanted)

    def _admit(self, cam: Camera, header: Header, info: Optional[Dict[str, Any]] = None
               ) -> Optional[FrozenSet[str]]:
        """Count the frame; the outputs to compute, or None when it is not to be processed."""
        stats = cam.stats
        stats.count("received")
        if info:
            # Where the RMW stamps samples (rclpy message info, system clock ns): the middleware's
            # transfer time and how long the sample waited for the executor.
            sent, got = info.get("source_timestamp") or 0, info.get("received_timestamp") or 0
            if sent > 0 and got >= sent:
                stats.add_stage("dds transfer", (got - sent) / 1e6)
                stats.add_stage("executor wait", max(time.time_ns() - got, 0) / 1e6)
        seq, gid = _sequence(info)
        lost = cam.loss.image(stamp_seconds(header), seq=seq, publisher=gid)
        if lost:
            stats.count("lost", lost)
        if not self._enabled:
            stats.count("paused")
            return None
        if not cam.rate_allows(self.params.max_rate, time.monotonic()):
            stats.count("rate_limited")
            return None
        outputs = self._wanted_outputs(cam)
        if not outputs:
            stats.count("no_subscribers")
            return None
        return outputs

    def _bad_input(self, cam: Camera, header: Header, exc: Exception) -> None:
        cam.stats.count("bad_input", error=str(exc))
        # Throttled per kind of problem (not per call site), so one kind cannot hide another.
        suppressed = self._bad_log.allow((cam.index, problem_kind(str(exc))))
        if suppressed is None:
            return
        more = f" ({suppressed} more like it since the last such line)" if suppressed else ""
        self.get_logger().warning(
            f"{cam.input_topic}: dropped frame (stamp {header.stamp.sec}.{header.stamp.nanosec:09d}, "
            f"frame_id '{header.frame_id}'): {exc}{more}")

    def _on_image(self, cam: Camera, msg: Image, info: Optional[Dict[str, Any]] = None) -> None:
        t0 = time.perf_counter()
        outputs = self._admit(cam, msg.header, info)
        if outputs is None:
            return
        try:
            check_header(msg.header)
            frame = image_to_numpy(msg)
        except InputError as exc:
            self._bad_input(cam, msg.header, exc)
            return
        ctx = FrameContext(cam.index, msg.header, cam.info, (msg.height, msg.width))
        self._submit(cam, lambda: self._engine.submit(frame.array, stamp_seconds(msg.header), source_id=cam.source_id,
                                                      bgr=frame.bgr, context=ctx, outputs=outputs,
                                                      block=False))
        cam.stats.add_stage("receive", (time.perf_counter() - t0) * 1000.0)

    def _on_compressed(self, cam: Camera, msg: CompressedImage, info: Optional[Dict[str, Any]] = None) -> None:
        outputs = self._admit(cam, msg.header, info)
        if outputs is None:
            return
        data = bytes(msg.data)  # one copy out of the message, for the check and the engine
        try:
            check_header(msg.header)
            fmt = compressed_format(msg, data)
        except InputError as exc:
            self._bad_input(cam, msg.header, exc)
            return
        if (cam.info is not None and "labels" in outputs and self.params.output_resolution == "network"
                and self._needs_input_size(cam)):
            outputs = outputs | {"input"}  # the decoded size is needed to scale camera_info
        ctx = FrameContext(cam.index, msg.header, cam.info, None)
        self._submit(cam, lambda: self._engine.submit_encoded(data, fmt, stamp_seconds(msg.header),
                                                              source_id=cam.source_id, context=ctx,
                                                              outputs=outputs, block=False))

    def _submit(self, cam: Camera, submit: Callable[[], bool]) -> None:
        try:
            accepted = submit()
        except InputError as exc:  # engines may validate synchronously too
            self._bad_input(cam, Header(), exc)
            return
        except Exception as exc:  # noqa: BLE001 (never let one frame take the node down)
            cam.stats.count("failed", error=f"{type(exc).__name__}: {exc}")
            self.get_logger().error(f"{cam.input_topic}: submitting a frame failed: {exc}",
                                    throttle_duration_sec=5.0)
            return
        if accepted is False:
            cam.stats.count("rejected")
