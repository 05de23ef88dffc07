"""``segmentation_node``: camera images in, segmentation images out, through the realtime engine.

The node is thin. It declares and validates the parameters, loads the model through an
injectable engine factory (:mod:`.engine_factory`), and per camera subscribes ``image`` (or
``image/compressed``) and ``camera_info`` (:mod:`.camera_input`) and publishes
``segmentation/{labels,color,overlay,drivable,confidence,camera_info,class_info}``
(:mod:`.outputs`). The image callback only converts the message (zero-copy) and hands the frame
to the engine (latest frame wins); inference runs on the engine's worker thread, which calls back
with the result to publish. Every output carries the input header unchanged. With
``bev.enable`` each camera also publishes ``segmentation/drivable_grid`` (nav_msgs/
OccupancyGrid, input stamp, frame ``bev.frame_id``) and ``segmentation/drivable_bev``
(:mod:`pspnet_ros.ros.bev_output`). This module wires them: the lifecycle steps the plain and
the managed node share, the fatal-error policy, /diagnostics and the parameter callbacks; the
process (init, spin, signals, exit codes) is :mod:`.process`.

Run: ``ros2 run pspnet_ros segmentation_node --ros-args --params-file config/pspnet.yaml``.
"""

from __future__ import annotations

import gc
import sys
from typing import Any, List, Optional, Tuple

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.clock import Clock, ClockType
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.lifecycle import State as LifecycleState
from rclpy.node import Node
from rclpy.parameter import Parameter
from rcl_interfaces.msg import SetParametersResult
from std_msgs.msg import Header
from std_srvs.srv import SetBool

from . import diagnostics, params as node_params, qos
from .camera_input import BAD_INPUT_LOG_PERIOD_S, QOS_CHECK_PERIOD_S, Camera, CameraInputs, FrameContext
from .engine_factory import EngineFactory, default_engine_factory
from .log_throttle import KindThrottle
from .outputs import OutputPublishing, published_outputs, resolve_drivable
from .process import EXIT_FATAL, NODE_NAME, FatalDeviceError, StartupError, run

FATAL_CHECK_PERIOD_S = 0.1


class _SegmentationCore(CameraInputs, OutputPublishing):
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
        self._drivable: Tuple[str, ...] = ()
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
            self._set_diagnostics_period(self.params.diagnostics_period)
        # A fresh engine starts with a clean record: failures counted (or a fatal error declared
        # but not yet acted on) before a cleanup belong to the engine that cleanup released.
        self._consecutive_failures = 0
        self._fatal = None
        self._seg, self._engine = engine_factory(self.params, self._on_result, self._on_error)
        self._model_name = str(getattr(self._seg, "model_name", "model"))
        self._inference_size = tuple(getattr(self._seg, "inference_size", (0, 0)))
        self._classes = list(self._seg.classes)
        self._drivable = resolve_drivable(self.params.drivable_classes, self._classes,
                                          getattr(self._seg, "meta", {}) or {})

        namespaces = self.params.cameras or ("",)
        self._cameras = [Camera(i, ns) for i, ns in enumerate(namespaces)]
        self._forced = qos.forced_reliability(self.params.qos_reliability)
        for cam in self._cameras:
            self._resolve_input_topic(cam)
            self._create_publishers(cam)
        self._engine.start()  # warms up the whole pipeline
        self._state = "inactive"
        device = getattr(self._seg, "device", "?")
        self.get_logger().info(
            f"model {self._model_name} ({len(self._classes)} classes: {', '.join(self._classes)}) "
            f"on {device} ({getattr(self._seg, 'backend', '?')} {getattr(self._seg, 'precision', '?')}"
            + (f"; {self._seg.precision_note}" if getattr(self._seg, "precision_note", "") else "")
            + f"), inference size {self._size_text()}, "
            f"serving {len(self._cameras)} camera(s): "
            + ", ".join(c.input_topic for c in self._cameras))

    def _size_text(self) -> str:
        """'HxW', or with ``inference_size`` auto each size in use and what runs it."""
        h, w = self._inference_size[:2]
        if not getattr(self._seg, "auto_size", False):
            return f"{h}x{w}"
        sizes = getattr(self._seg, "sizes", dict)()
        return "auto (" + ", ".join(f"{k} {v['backend']} {v['precision']}" for k, v in sizes.items()) + ")"

    def _activate(self) -> None:
        """Subscribe every camera: frames flow."""
        for cam in self._cameras:
            self._publish_class_info(cam)
            # Frames published while inactive were never meant for the node: not losses.
            cam.loss.reset()
            self._create_subscriptions(cam)
        if self._forced is None:
            self._qos_timer = self.create_timer(QOS_CHECK_PERIOD_S, self._check_qos, clock=self._steady)
        self._state = "active"

    def _deactivate(self, timeout: float = 2.0) -> None:
        """Unsubscribe, then let the engine finish and publish the frames it holds.

        Results that arrive after ``timeout`` are counted as ``deactivated`` in /diagnostics
        (and logged), never dropped silently.
        """
        self._unsubscribe()
        if self._engine is not None and not self._engine.flush(timeout):
            self.get_logger().warning(f"deactivate: the engine did not finish its frames in {timeout:g} s; "
                                      "their results are counted as 'not published at deactivate'")
        self._state = "inactive"

    def _unsubscribe(self) -> None:
        """Destroy the QoS timer and every camera subscription: no callback brings frames any more."""
        if self._qos_timer is not None:
            self.destroy_timer(self._qos_timer)
            self._qos_timer = None
        for cam in self._cameras:
            for sub in (cam.subscription, cam.info_subscription):
                if sub is not None:
                    self.destroy_subscription(sub)
            cam.subscription = cam.info_subscription = None
            cam.reliability = None

    def _stop_engine(self, timeout: float) -> None:
        """Stop the engine (joins its worker) before the publishers it uses go away."""
        engine, self._engine = self._engine, None
        if engine is not None:
            try:
                engine.stop(timeout=timeout)
            except Exception as exc:  # noqa: BLE001 (shutting down: log it, release the rest)
                self.get_logger().error(f"stopping the engine: {exc}")

    def _cleanup(self, timeout: float = 2.0) -> None:
        """Release everything configure and activate made, from any state (cleanup, shutdown, on_error).

        The order matters: subscriptions and the QoS timer first (their callbacks use the
        publishers and the engine), then the engine (its worker publishes results), then the
        publishers, then the model.
        """
        self._unsubscribe()
        self._stop_engine(timeout)
        for cam in self._cameras:
            self._destroy_publishers(cam)
        self._cameras = []
        self._seg = None
        gc.collect()
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()  # give the model's memory back to other processes
        self._state = "unconfigured"

    # --------------------------------------------------- fatal-error policy
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
        limit = self.params.max_consecutive_failures
        if err.kind == "device_lost":  # a sticky CUDA error (engine.classify_error)
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
            self._publish_with_entities(array)
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
                self._model_name, self._size_text(), self._state, self.MANAGED,
                transport_hint=cam.transport_hint))
            lines.append(diagnostics.log_line(cam.input_topic, window))
        self._publish_with_entities(array)
        self.get_logger().info(" | ".join(lines), throttle_duration_sec=max(10.0, self.params.diagnostics_period))

    def _publish_with_entities(self, array: DiagnosticArray) -> None:
        """Publish ``array`` with the node's timer count in each status.

        Subscriptions and publishers show in the ROS graph (``ros2 node info``); timers do not,
        and one left behind by a lifecycle transition would otherwise go unseen.
        """
        timers = KeyValue(key="timers", value=str(len(list(self.timers))))
        for status in array.status:
            status.values.append(timers)
        try:
            self._diag_pub.publish(array)
        except Exception:  # noqa: BLE001 - re-raised unless the context is already down
            # SIGINT shut the context down while this timer callback ran (seen on Jazzy's rclpy
            # 7.1: "publisher's context is invalid"): nobody is left to publish to.
            if self.context.ok():
                raise

    def _set_diagnostics_period(self, period: float) -> None:
        """Publish /diagnostics every ``period`` seconds from now on."""
        period_ns = int(round(period * 1e9))
        if self._diag_timer.timer_period_ns != period_ns:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = self.create_timer(period, self._publish_diagnostics, clock=self._steady)

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
        for change in changes:
            # a managed node accepts it while unconfigured: the diagnostics come at the new
            # period from now on (configure reads it again with the other parameters)
            if change.name == "diagnostics_period":
                self._set_diagnostics_period(float(change.value))
        if self._engine is not None:
            self._engine.update(overlay_alpha=p.overlay_alpha, outputs=published_outputs(p))

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


def main(argv: Optional[List[str]] = None, engine_factory: EngineFactory = default_engine_factory,
         managed: bool = False) -> int:
    """``segmentation_node`` (or, with ``managed``, the lifecycle node): init, spin, exit code."""
    node_class = SegmentationLifecycleNode if managed else SegmentationNode
    return run(lambda: node_class(engine_factory=engine_factory), argv)


def lifecycle_main(argv: Optional[List[str]] = None,
                   engine_factory: EngineFactory = default_engine_factory) -> int:
    """``segmentation_lifecycle_node``: the managed node (starts unconfigured)."""
    return main(argv, engine_factory, managed=True)


if __name__ == "__main__":
    sys.exit(lifecycle_main() if "--lifecycle" in sys.argv[1:2] else main())
