"""``segmentation_node``: camera images in, segmentation images out, through the realtime engine.

The node is thin. It declares and validates the parameters, loads the model through an
injectable engine factory, and per camera subscribes ``image`` (or ``image/compressed``) and
``camera_info`` and publishes ``segmentation/{labels,color,overlay,drivable,confidence,
camera_info,class_info}``. The image callback only converts the message (zero-copy) and hands
the frame to the engine (latest frame wins); inference runs on the engine's worker thread, which
calls back with the result to publish. Every output carries the input header unchanged.
With ``bev.enable`` each camera also publishes ``segmentation/drivable_grid`` (nav_msgs/
OccupancyGrid, input stamp, frame ``bev.frame_id``) and ``segmentation/drivable_bev``
(:mod:`pspnet_ros.ros.bev_output`).

Run: ``ros2 run pspnet_ros segmentation_node --ros-args --params-file config/pspnet.yaml``.
"""

from __future__ import annotations

import gc
import logging
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Sequence, Tuple

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.clock import Clock, ClockType
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.lifecycle import State as LifecycleState
from rclpy.node import Node
from rclpy import subscription as rclpy_subscription
from rclpy.parameter import Parameter
from rcl_interfaces.msg import SetParametersResult
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header, String
from std_srvs.srv import SetBool

from ..class_info import class_info_json
from ..errors import InputError
from . import diagnostics, params as node_params, qos
from .conversions import check_header, compressed_format, image_to_numpy, numpy_to_image, scale_camera_info
from .log_throttle import KindThrottle, problem_kind

try:  # Iron and later
    from rclpy.event_handler import SubscriptionEventCallbacks
except ImportError:  # Humble
    try:
        from rclpy.qos_event import SubscriptionEventCallbacks
    except ImportError:
        SubscriptionEventCallbacks = None
# rclpy passes (msg, message info) to two-argument callbacks since Iron; Humble's does not.
MESSAGE_INFO = hasattr(rclpy_subscription, "MessageInfo")

NODE_NAME = "segmentation_node"
# (engine output name, published encoding)
OUTPUTS: Tuple[Tuple[str, str], ...] = (("labels", "mono8"), ("color", "rgb8"), ("overlay", "rgb8"),
                                        ("drivable", "mono8"), ("confidence", "mono8"))
TOGGLES = {"color": "publish_color", "overlay": "publish_overlay", "drivable": "publish_drivable",
           "confidence": "publish_confidence"}
QOS_CHECK_PERIOD_S = 0.5
BAD_INPUT_LOG_PERIOD_S = 5.0  # one log line per kind of bad frame per period


class StartupError(RuntimeError):
    """The node cannot start with this configuration; the message says why (no traceback)."""


class FatalDeviceError(RuntimeError):
    """The engine cannot process frames any more.

    A sticky CUDA error, or too many consecutive failures: the node exits with EXIT_FATAL so that
    ``respawn=True`` restarts it.
    """


EXIT_FATAL = 3
# Errors after which a CUDA context is unusable (every later call fails too): exit at once.
STICKY_CUDA_ERRORS = ("illegal memory access", "device-side assert", "unspecified launch failure",
                      "misaligned address", "an illegal instruction", "cuda error: unknown error",
                      "device not ready", "uncorrectable ecc")
FATAL_CHECK_PERIOD_S = 0.1


# engine_factory(params, on_result, on_error) -> (segmenter, engine). The segmenter needs
# classes, palette, meta, model_name, device, inference_size; the engine start/submit/
# submit_encoded/update/stats/stop as in pspnet_ros.inference.
EngineFactory = Callable[[node_params.NodeParams, Callable[[Any], None], Callable[[Any], None]],
                         Tuple[Any, Any]]


def resolve_drivable(requested: Sequence[str], classes: Sequence[str], meta: Dict[str, Any]) -> Tuple[str, ...]:
    """Drivable class names: the requested ones, or the checkpoint's; all must be model classes."""
    names = tuple(requested) or tuple(meta.get("drivable_classes") or ())
    unknown = [n for n in names if n not in classes]
    if unknown:
        raise StartupError(f"parameter 'drivable_classes' names {unknown}, which the model does not have "
                           f"(its classes: {list(classes)})")
    return names


def default_engine_factory(p: node_params.NodeParams, on_result: Callable[[Any], None],
                           on_error: Callable[[Any], None]) -> Tuple[Any, Any]:
    """Load the checkpoint into a Segmenter and wrap it in a RealtimeEngine."""
    from ..models import CheckpointError
    from ..paths import ModelNotFoundError, resolve_checkpoint, resolve_device

    try:
        device = resolve_device(p.device)
        path = resolve_checkpoint(p.checkpoint, dataset="kitti_road", device=device)
    except ModelNotFoundError as exc:
        raise StartupError(f"checkpoint 'auto': {exc}; train one (pspnet train) or set 'checkpoint' "
                           "to a .pt file") from None
    except (RuntimeError, ValueError) as exc:
        raise StartupError(f"parameter 'device': {exc}") from None

    if not path.is_file():  # say so before the slow torch import
        problem = "is not a regular file" if path.exists() else "file does not exist"
        raise StartupError(f"parameter 'checkpoint': {CheckpointError(path, problem)}")

    from ..inference import EngineConfig, RealtimeEngine, Segmenter

    try:
        seg = Segmenter.from_checkpoint(str(path), device=device, precision=p.precision,
                                        inference_size=p.inference_size, backend=p.backend,
                                        num_threads=p.inference_threads or None, max_batch=p.max_batch)
    except CheckpointError as exc:
        raise StartupError(f"parameter 'checkpoint': {exc}") from None
    except (ValueError, RuntimeError) as exc:
        raise StartupError(f"cannot load {path} on {device} (precision {p.precision}, backend {p.backend}): "
                           f"{exc}") from None
    drivable = resolve_drivable(p.drivable_classes, seg.classes, seg.meta) or None
    cfg = EngineConfig(drop_policy=p.drop_policy, output_resolution=p.output_resolution,
                       overlay_alpha=p.overlay_alpha, drivable_classes=drivable,
                       outputs=frozenset(("labels",) + tuple(k for k, t in TOGGLES.items()
                                                             if getattr(p, t))),
                       compile=p.compile, cuda_graphs=p.cuda_graphs, max_batch=p.max_batch)
    return seg, RealtimeEngine(seg, cfg, on_result=on_result, on_error=on_error)


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
        self.loss = diagnostics.StampGapMeter()
        self.bev: Any = None  # bev_output.BevOutput when bev.enable
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


class _SegmentationCore:
    """What the plain and the managed (lifecycle) node share.

    The lifecycle steps are methods: ``_configure`` loads and warms the model and creates the
    publishers, ``_activate`` subscribes, ``_deactivate`` unsubscribes and lets the engine
    finish (publishing) the frames it holds, ``_cleanup`` unloads the model. The plain node runs
    configure and activate in its constructor; :class:`SegmentationLifecycleNode` runs them on
    ``ros2 lifecycle set`` or a lifecycle manager. Mixed into an rclpy ``Node``.
    """

    MANAGED = False

    def _reset_fields(self) -> None:
        self._engine: Any = None
        self._seg: Any = None
        self._closing = False
        self._consecutive_failures = 0
        self._fatal: Optional[str] = None
        self._bad_log = KindThrottle(BAD_INPUT_LOG_PERIOD_S)
        self._cameras: List[Camera] = []
        self._enabled = True
        self._state = "unconfigured"
        self._model_name = ""
        self._inference_size: Tuple[int, ...] = (0, 0)
        self._classes: List[str] = []
        self._qos_timer: Any = None
        self._forced: Any = None

    # ----------------------------------------------------------------- setup
    def _init_core(self) -> None:
        """Parameters, /diagnostics, ~/enable and timers: what exists in every lifecycle state."""
        log = self.get_logger()
        try:
            self.params = node_params.declare(self, managed=self.MANAGED)
        except node_params.ParameterError as exc:
            raise StartupError(str(exc)) from None
        for name in node_params.unknown_overrides(self):
            log.warning(f"unknown parameter '{name}' ignored (typo? see config/pspnet.yaml)")
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", qos.diagnostics_qos())
        self.create_service(SetBool, "~/enable", self._on_enable)
        self.add_on_set_parameters_callback(self._check_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)
        # Steady clock: with use_sim_time a paused or looping bag stops or rewinds ROS time, and
        # diagnostics must keep coming (their rates are per wall-clock second anyway).
        self._steady = Clock(clock_type=ClockType.STEADY_TIME)
        period = float(self.get_parameter("diagnostics_period").value)
        self._diag_timer = self.create_timer(period, self._publish_diagnostics, clock=self._steady)
        self._fatal_timer = self.create_timer(FATAL_CHECK_PERIOD_S, self._check_fatal, clock=self._steady)

    def _configure(self, engine_factory: EngineFactory) -> None:
        """Load and warm up the model, create the publishers. Raises StartupError."""
        if self.MANAGED:  # parameters may have changed while unconfigured
            try:
                self.params = node_params.current(self)
            except node_params.ParameterError as exc:
                raise StartupError(str(exc)) from None
        self._seg, self._engine = engine_factory(self.params, self._on_result, self._on_error)
        self._model_name = str(getattr(self._seg, "model_name", "model"))
        self._inference_size = tuple(getattr(self._seg, "inference_size", (0, 0)))
        self._classes = list(self._seg.classes)

        namespaces = self.params.cameras or ("",)
        self._cameras = [Camera(i, ns) for i, ns in enumerate(namespaces)]
        self._forced = qos.forced_reliability(self.params.qos_reliability)
        for cam in self._cameras:
            self._create_publishers(cam)
        self._engine.start()  # warms up the whole pipeline
        self._state = "inactive"
        device = getattr(self._seg, "device", "?")
        self.get_logger().info(
            f"model {self._model_name} ({len(self._classes)} classes: {', '.join(self._classes)}) "
            f"on {device} ({getattr(self._seg, 'backend', '?')} {getattr(self._seg, 'precision', '?')}"
            + (f"; {self._seg.precision_note}" if getattr(self._seg, "precision_note", "") else "")
            + f"), inference size {self._inference_size[0]}x{self._inference_size[1]}, "
            f"serving {len(self._cameras)} camera(s): "
            + ", ".join(c.input_topic for c in self._cameras))

    def _activate(self) -> None:
        """Subscribe every camera: frames flow."""
        for cam in self._cameras:
            cam.class_info_publisher.publish(String(data=self._class_info_json()))
            self._create_subscriptions(cam)
        if self._forced is None:
            self._qos_timer = self.create_timer(QOS_CHECK_PERIOD_S, self._check_qos, clock=self._steady)
        self._state = "active"

    def _deactivate(self, timeout: float = 2.0) -> None:
        """Unsubscribe, then let the engine finish and publish the frames it holds.

        Results that arrive after ``timeout`` are counted as ``deactivated`` in /diagnostics
        (and logged), never dropped silently.
        """
        if self._qos_timer is not None:
            self.destroy_timer(self._qos_timer)
            self._qos_timer = None
        for cam in self._cameras:
            for sub in (cam.subscription, cam.info_subscription):
                if sub is not None:
                    self.destroy_subscription(sub)
            cam.subscription = cam.info_subscription = None
            cam.reliability = None
        if self._engine is not None and not self._engine.flush(timeout):
            self.get_logger().warning(f"deactivate: the engine did not finish its frames in {timeout:g} s; "
                                      "their results are counted as 'not published at deactivate'")
        self._state = "inactive"

    def _stop_engine(self, timeout: float) -> None:
        """Stop the engine (joins its worker) before the publishers it uses go away."""
        engine, self._engine = self._engine, None
        if engine is not None:
            try:
                engine.stop(timeout=timeout)
            except Exception as exc:  # noqa: BLE001 (shutting down: log it, release the rest)
                self.get_logger().error(f"stopping the engine: {exc}")

    def _cleanup(self, timeout: float = 2.0) -> None:
        """Stop the engine, unload the model, remove the publishers."""
        self._stop_engine(timeout)
        for cam in self._cameras:
            bev_pubs = cam.bev.publishers() if cam.bev is not None else ()
            for pub in (*cam.publishers.values(), cam.info_publisher, cam.class_info_publisher, *bev_pubs):
                if pub is not None:
                    self.destroy_publisher(pub)
        self._cameras = []
        self._seg = None
        gc.collect()
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()  # give the model's memory back to other processes
        self._state = "unconfigured"

    def _create_publishers(self, cam: Camera) -> None:
        out_qos = qos.output_qos()
        for kind, _enc in OUTPUTS:
            cam.publishers[kind] = self.create_publisher(Image, f"{cam.prefix}segmentation/{kind}", out_qos)
        cam.info_publisher = self.create_publisher(CameraInfo, f"{cam.prefix}segmentation/camera_info", out_qos)
        cam.class_info_publisher = self.create_publisher(String, f"{cam.prefix}segmentation/class_info",
                                                         qos.latched_qos())
        if self.params.bev_enable:  # segmentation/drivable_grid (+ drivable_bev)
            cam.bev = self._bev_output(cam, out_qos)
        base = self.resolve_topic_name(f"{cam.prefix}image")
        cam.input_topic = base + "/compressed" if self.params.input_transport == "compressed" else base

    def _create_subscriptions(self, cam: Camera) -> None:
        cam.info_subscription = self.create_subscription(
            CameraInfo, f"{cam.prefix}camera_info", lambda m, c=cam: self._on_camera_info(c, m),
            qos.camera_info_qos())
        reliability = self._forced
        if reliability is None:
            reliability = qos.matching_reliability(self._offered(cam)) or qos.RELIABLE
        self._subscribe(cam, reliability)

    def _bev_output(self, cam: Camera, out_qos: Any) -> Any:
        from .bev_output import BevOutput  # nav_msgs only when the grid is asked for

        if len(self.params.cameras) > 1:  # one bev.camera_to_ground cannot be every camera's pose
            raise StartupError("bev.enable supports one camera (one bev.camera_to_ground); run one node "
                               "per camera for several grids")
        names = resolve_drivable(self.params.drivable_classes, self._classes, getattr(self._seg, "meta", {}) or {})
        if not names:
            raise StartupError("bev.enable needs drivable classes: set 'drivable_classes' (the model's "
                               "checkpoint names none)")
        try:
            grid, transform = node_params.bev_setup(self.params)
        except node_params.ParameterError as exc:
            raise StartupError(str(exc)) from None
        return BevOutput(self, cam.prefix, grid, transform, [self._classes.index(n) for n in names],
                         self.params.bev_publish_image, out_qos)

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

    @staticmethod
    def _input_callback(cam: Camera, callback: Callable[..., None]) -> Callable[..., None]:
        """Wrap ``callback(cam, msg, info)`` for the image subscription.

        Where rclpy passes message info (Iron and later: a two-argument callback), its
        publication sequence numbers count exactly the samples the keep-last-1 queue replaced;
        Humble's rclpy passes the message only and the stamps alone count losses.
        """
        if MESSAGE_INFO:
            return lambda m, info: callback(cam, m, info)
        return lambda m: callback(cam, m, None)

    def _on_camera_info(self, cam: Camera, msg: CameraInfo) -> None:
        cam.info = msg
        cam.loss.camera_info(_stamp(msg.header))

    def _class_info_json(self) -> str:
        meta = getattr(self._seg, "meta", {}) or {}
        # One definition shared with `pspnet bag`, so recorded and live class_info agree.
        return class_info_json(meta, model_name=self._model_name, palette=self._seg.palette,
                               drivable_classes=resolve_drivable(self.params.drivable_classes,
                                                                 self._classes, meta),
                               inference_size=self._inference_size)

    # ------------------------------------------------------------------ QoS
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

    # --------------------------------------------------------------- input
    def _wanted_outputs(self, cam: Camera) -> FrozenSet[str]:
        p = self.params
        wanted = set()
        for kind, _enc in OUTPUTS:
            if kind in TOGGLES and not getattr(p, TOGGLES[kind]):
                continue
            if cam.publishers[kind].get_subscription_count() > 0:
                wanted.add(kind)
        if cam.info_publisher.get_subscription_count() > 0:
            # segmentation/camera_info alone is worth a frame too (`ros2 topic echo` of it must
            # not hang); it needs the output size, which labels give.
            wanted.add("labels")
        if cam.bev is not None and cam.bev.wanted():
            wanted.add("labels")  # the grid is projected from the labels
        return frozenset(wanted)

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
        seq = info.get("publication_sequence_number") if info else None
        gid = info.get("publisher_gid") if info else None
        lost = cam.loss.image(_stamp(header), seq=seq, publisher=repr(gid) if gid is not None else "")
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
        self._submit(cam, lambda: self._engine.submit(frame.array, _stamp(msg.header), source_id=cam.source_id,
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
                and (cam.info_publisher.get_subscription_count() or (cam.bev is not None and cam.bev.wanted()))):
            outputs = outputs | {"input"}  # the decoded size is needed to scale camera_info
        ctx = FrameContext(cam.index, msg.header, cam.info, None)
        self._submit(cam, lambda: self._engine.submit_encoded(data, fmt, _stamp(msg.header),
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

    # -------------------------------------------------------------- output
    def _on_result(self, res: Any) -> None:
        """Engine worker thread: publish every computed output with the input header."""
        if self._closing:
            return
        ctx: FrameContext = res.context
        cam = self._cameras[ctx.camera]
        if self._state != "active":  # finished after deactivate's flush timeout
            cam.stats.count("deactivated")
            return
        try:
            t0 = time.perf_counter()
            self._publish_result(cam, ctx, res)
            cam.stats.add_stage("publish", (time.perf_counter() - t0) * 1000.0)
        except Exception as exc:  # noqa: BLE001 (a publishing problem must not kill the engine worker)
            if self._closing:
                return
            cam.stats.count("failed", error=f"publishing: {exc}")
            self.get_logger().error(f"{cam.prefix}segmentation: publishing failed: {exc}",
                                    throttle_duration_sec=5.0)

    def _publish_result(self, cam: Camera, ctx: FrameContext, res: Any) -> None:
        p = self.params
        for kind, encoding in OUTPUTS:
            array = getattr(res, kind, None)
            if array is None or (kind in TOGGLES and not getattr(p, TOGGLES[kind])):
                continue
            cam.publishers[kind].publish(numpy_to_image(array, encoding, ctx.header))
        if ctx.info is not None and res.labels is not None and cam.info_publisher.get_subscription_count():
            in_size = _input_size(ctx, res)
            try:
                cam.info_publisher.publish(scale_camera_info(ctx.info, in_size, res.labels.shape[:2], ctx.header))
            except InputError as exc:
                self._camera_info_problem(cam, "camera_info", f"{cam.prefix}camera_info not republished", exc)
        if cam.bev is not None and res.labels is not None and cam.bev.wanted():
            try:
                cam.bev.publish(ctx.header, ctx.info, _input_size(ctx, res), res.labels)
            except InputError as exc:
                self._camera_info_problem(cam, "drivable_grid",
                                          f"{cam.prefix}segmentation/drivable_grid not published", exc)
        cam.stats.count("processed")
        self._consecutive_failures = 0
        stamp_ns = ctx.header.stamp.sec * 1_000_000_000 + ctx.header.stamp.nanosec
        if stamp_ns > 0:
            # Node clock, so with use_sim_time this is sim now - stamp (bag replay stays meaningful).
            # Negative when /clock jumped back (a looping bag): not a latency, skipped.
            latency_ns = self.get_clock().now().nanoseconds - stamp_ns
            if latency_ns >= 0:
                cam.stats.add_latency(latency_ns / 1e6)

    def _camera_info_problem(self, cam: Camera, output: str, what: str, exc: InputError) -> None:
        """Count a camera_info that cannot serve ``output``; log it, throttled per kind."""
        cam.stats.count("bad_camera_info", error=f"{output}: {exc}")
        if self._bad_log.allow((cam.index, problem_kind(str(exc)))) is not None:
            self.get_logger().warning(f"{what}: {exc}")

    def _on_error(self, err: Any) -> None:
        """Engine worker thread: a frame could not be processed (bad data, OOM, failure)."""
        if self._closing:
            return
        ctx = err.context
        cam = self._cameras[ctx.camera] if isinstance(ctx, FrameContext) else self._cameras[0]
        header = ctx.header if isinstance(ctx, FrameContext) else Header()
        if err.kind == "bad_input":
            self._bad_input(cam, header, err.error)
            return
        cam.stats.count("failed", error=f"{err.kind}: {err.error}")
        self.get_logger().error(f"{cam.input_topic}: frame failed ({err.kind}): {err.error}",
                                throttle_duration_sec=5.0)
        # A frame-level failure never stops the node; a device that fails every frame does.
        self._consecutive_failures += 1
        text = str(err.error).lower()
        limit = self.params.max_consecutive_failures
        if any(k in text for k in STICKY_CUDA_ERRORS) and "cuda" in text:
            self._declare_fatal(f"sticky CUDA error, the device is unusable: {err.error}")
        elif limit and self._consecutive_failures >= limit:
            self._declare_fatal(f"{self._consecutive_failures} consecutive frames failed in the engine "
                                f"(max_consecutive_failures {limit}); last: {err.kind}: {err.error}")

    def _declare_fatal(self, reason: str) -> None:
        """Engine worker thread: remember why; the executor's fatal check stops the node."""
        if self._fatal is None:
            self._fatal = reason

    def _check_fatal(self) -> None:
        """Stop after a fatal engine error (executor thread).

        Publishes ERROR diagnostics, logs why and leaves spin() (main exits with EXIT_FATAL).
        """
        if self._fatal is None or self._closing:
            return
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        for cam in self._cameras or [Camera(0, "")]:
            status = DiagnosticStatus(level=DiagnosticStatus.ERROR, name=(
                f"{self.get_fully_qualified_name()}: {cam.namespace}" if cam.namespace
                else self.get_fully_qualified_name()), message=f"fatal: {self._fatal}",
                hardware_id=f"{self._model_name}")
            status.values = [KeyValue(key="fatal", value=self._fatal),
                             KeyValue(key="exit code", value=str(EXIT_FATAL))]
            array.status.append(status)
        self._diag_pub.publish(array)
        self.get_logger().fatal(f"stopping: {self._fatal} (exit code {EXIT_FATAL}; respawn restarts the node)")
        raise FatalDeviceError(self._fatal)

    # ---------------------------------------------------------- diagnostics
    def _publish_diagnostics(self) -> None:
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        fqn = self.get_fully_qualified_name()
        if self._state != "active":  # a managed node that serves no camera now
            message = {"unconfigured": "unconfigured: no model loaded (configure loads it)",
                       "inactive": f"inactive: model {self._model_name} loaded, not subscribed "
                                   "(activate starts processing)"}.get(self._state, self._state)
            array.status.append(diagnostics.state_status(fqn, self._model_name or "none", self._state, message))
            self._diag_pub.publish(array)
            return
        try:
            stats = self._engine.stats()
        except Exception as exc:  # noqa: BLE001 (diagnostics must not take the node down either)
            stats = {"device": "?", "error": str(exc)}
        per_source = stats.get("per_source") or {}
        lines = []
        for cam in self._cameras:
            source = per_source.get(cam.source_id, {})
            dropped = int(source.get("dropped", stats.get("dropped", 0) if len(self._cameras) == 1 else 0) or 0)
            # the engine counts refused submits as dropped too
            window = cam.stats.window(dropped, cam.loss.period())
            label = f"{fqn}: {cam.namespace}" if cam.namespace else fqn
            array.status.append(diagnostics.build_status(
                label, f"{self._model_name}@{stats.get('device', '?')}", window, not self._enabled,
                cam.input_topic, {**stats, **({"stages_ms": source["stages_ms"]} if "stages_ms" in source else {})},
                self._model_name, self._inference_size, self._state, self.MANAGED))
            lines.append(diagnostics.log_line(cam.input_topic, window))
        self._diag_pub.publish(array)
        self.get_logger().info(" | ".join(lines), throttle_duration_sec=max(10.0, self.params.diagnostics_period))

    # ------------------------------------------------ services, parameters
    def _on_enable(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        self._enabled = bool(request.data)
        response.success = True
        response.message = "processing resumed" if self._enabled else "processing paused (model stays loaded)"
        self.get_logger().info(response.message)
        return response

    def _check_parameters(self, changes: List[Parameter]) -> SetParametersResult:
        p = self.params
        for change in changes:
            if change.name == "use_sim_time":
                continue
            if self.MANAGED:
                reason, p = node_params.check_change(p, change.name, change.value,
                                                     configured=self._state != "unconfigured",
                                                     state=self._state)
            else:
                reason, p = node_params.check_runtime_change(p, change.name, change.value)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    def _apply_parameters(self, changes: List[Parameter]) -> None:
        p = self.params
        for change in changes:
            if change.name in node_params.RUNTIME:
                p = node_params.check_runtime_change(p, change.name, change.value)[1]
        self.params = p  # one reference swap: callbacks always see a consistent set
        outputs = frozenset(("labels",) + tuple(k for k, t in TOGGLES.items() if getattr(p, t)))
        if self._engine is not None:
            self._engine.update(overlay_alpha=p.overlay_alpha, outputs=outputs)

    # ------------------------------------------------------------- shutdown
    def close(self, timeout: float = 2.0) -> None:
        """Stop the engine (joins its worker) before the publishers it uses go away."""
        if self._closing:
            return
        self._closing = True
        self._stop_engine(timeout)
        self.destroy_node()


class SegmentationNode(_SegmentationCore, Node):
    """The plain node: configured and active from the start (the default)."""

    def __init__(self, *, engine_factory: EngineFactory = default_engine_factory,
                 node_name: str = NODE_NAME, **node_kwargs: Any) -> None:
        self._reset_fields()
        super().__init__(node_name, **node_kwargs)
        try:
            self._init_core()
            self._configure(engine_factory)
            self._activate()
        except BaseException:
            self.close()
            raise


class SegmentationLifecycleNode(_SegmentationCore, LifecycleNode):
    """The managed node (``segmentation_lifecycle_node``, launch ``lifecycle:=true``).

    Starts unconfigured. configure: load and warm up the model (on an error: back to
    unconfigured, with the reason logged and in /diagnostics); activate: subscribe and publish;
    deactivate: unsubscribe, publish what the engine still holds; cleanup: unload the model;
    shutdown: from any state. Parameters that need a restart in the plain node may change while
    unconfigured.
    """

    MANAGED = True

    def __init__(self, *, engine_factory: EngineFactory = default_engine_factory,
                 node_name: str = NODE_NAME, **node_kwargs: Any) -> None:
        self._reset_fields()
        self._engine_factory = engine_factory
        self._last_error = ""
        super().__init__(node_name, **node_kwargs)
        try:
            self._init_core()
        except BaseException:
            self.close()
            raise
        self.get_logger().info("managed node: unconfigured (ros2 lifecycle set <node> configure)")

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load and warm up the model; on an error, log why and stay unconfigured."""
        try:
            self._configure(self._engine_factory)
        except StartupError as exc:
            self._last_error = str(exc)
            self.get_logger().error(f"configure failed, staying unconfigured: {exc}")
            self._cleanup()
            return TransitionCallbackReturn.FAILURE
        self._last_error = ""
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Subscribe the cameras."""
        self._activate()
        self.get_logger().info("active: " + ", ".join(c.input_topic for c in self._cameras))
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Unsubscribe; frames in the engine are published (or counted) first."""
        self._deactivate()
        self.get_logger().info("inactive: not subscribed, model loaded")
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Unload the model."""
        self._cleanup()
        self.get_logger().info("unconfigured: model unloaded")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """From any primary state: stop everything."""
        if self._state == "active":
            self._deactivate()
        self._cleanup()
        self._state = "finalized"
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release everything after a transition raised, and go back to unconfigured."""
        self.get_logger().error("a lifecycle transition failed; cleaning up to unconfigured")
        self._cleanup()
        return TransitionCallbackReturn.SUCCESS


def _input_size(ctx: FrameContext, res: Any) -> Tuple[int, int]:
    """(h, w) of the frame the outputs were computed from (what camera_info describes)."""
    if ctx.size is not None:
        return ctx.size
    if getattr(res, "input", None) is not None:
        return tuple(res.input.shape[:2])
    return tuple(res.labels.shape[:2])  # output_resolution input: the outputs have the decoded size


def _stamp(header: Header) -> float:
    return header.stamp.sec + header.stamp.nanosec * 1e-9


class _RosLogHandler(logging.Handler):
    """Forward the library's Python logging (engine, decoders) to the node's ROS logger.

    Those lines then reach /rosout and the console in ROS format instead of bare stderr.
    """

    def __init__(self, logger: Any) -> None:
        super().__init__(level=logging.INFO)
        self._logger = logger

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = f"[{record.name}] {record.getMessage()}"
            if record.levelno >= logging.ERROR:
                self._logger.error(msg)
            elif record.levelno >= logging.WARNING:
                self._logger.warning(msg)
            else:
                self._logger.info(msg)
        except Exception:  # noqa: BLE001 (logging must never take the node down)
            self.handleError(record)


def _bridge_library_logging() -> None:
    lib = logging.getLogger("pspnet_ros")
    if not any(isinstance(h, _RosLogHandler) for h in lib.handlers):
        lib.addHandler(_RosLogHandler(rclpy.logging.get_logger(NODE_NAME)))
        lib.setLevel(logging.INFO)
        lib.propagate = False


def main(argv: Optional[List[str]] = None, engine_factory: EngineFactory = default_engine_factory,
         managed: bool = False) -> int:
    """``segmentation_node`` (or, with ``managed``, the lifecycle node): init, spin, exit code."""
    starting = True

    def sigterm_while_starting(signum: int, frame: Any) -> None:
        # rclpy turns SIGTERM into a context shutdown, which nothing notices while the model
        # loads (seconds, then a traceback from the dead context); during start-up, stop the way
        # SIGINT does. Afterwards rclpy's own handling (spin returns) applies.
        if starting:
            raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, sigterm_while_starting)  # installed first: rclpy chains to it
    try:
        rclpy.init(args=argv if argv is not None else sys.argv)
    except RuntimeError as exc:  # rcl's RCLError: unreadable --params-file, bad --ros-args
        # rcl has already logged its own line; add one that says what to fix, without a traceback.
        detail = str(exc).split(", at /")[0]
        sys.stderr.write(f"[FATAL] [{NODE_NAME}]: cannot start: {detail}\n")
        return 2
    _bridge_library_logging()
    node: Optional[SegmentationNode] = None
    try:
        node_class = SegmentationLifecycleNode if managed else SegmentationNode
        node = node_class(engine_factory=engine_factory)
        starting = False
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except StartupError as exc:
        rclpy.logging.get_logger(NODE_NAME).fatal(f"cannot start: {exc}")
        return 2
    except FatalDeviceError:
        return EXIT_FATAL  # already logged and published by the node
    except Exception as exc:  # noqa: BLE001 - only errors raised by the shutdown itself end here quietly
        if rclpy.ok():
            raise  # the node is not stopping: a real error, with its traceback
        # SIGINT/SIGTERM shut the context down between the executor's wait and its take of a
        # message (seen: rclpy's take_message raising RuntimeError). The node was stopping anyway.
        rclpy.logging.get_logger(NODE_NAME).info(
            f"stopped; the shutdown interrupted the executor ({type(exc).__name__}: {exc})")
    finally:
        if node is not None:
            node.close()
        rclpy.try_shutdown()
        # All that is left is interpreter teardown, whose final garbage collections walk every
        # object torch created: 2.5-3.5 s after SIGINT/SIGTERM on a busy 2-core CPU, 0.6-0.8 s
        # with the heap frozen (nothing needs collecting any more). Keeps exit within 2 s.
        gc.freeze()
    return 0


def lifecycle_main(argv: Optional[List[str]] = None,
                   engine_factory: EngineFactory = default_engine_factory) -> int:
    """``segmentation_lifecycle_node``: the managed node (starts unconfigured)."""
    return main(argv, engine_factory, managed=True)


if __name__ == "__main__":
    sys.exit(lifecycle_main() if "--lifecycle" in sys.argv[1:2] else main())
