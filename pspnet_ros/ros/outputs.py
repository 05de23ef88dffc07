"""What the node publishes per camera, and when: the outputs, their toggles, the publishers.

One decision each: :data:`OUTPUTS` (the images and their encodings), :data:`TOGGLES` (the
``publish_*`` parameter of each optional one), :func:`published_outputs` (what the engine computes
for a parameter set), :func:`resolve_drivable` (the drivable class names). Every output carries
the input header unchanged. Mixed into the node (:class:`OutputPublishing`); the engine worker
thread calls :meth:`OutputPublishing._on_result`.
"""

from __future__ import annotations

import time
from typing import Any, Dict, FrozenSet, Sequence, Tuple

from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import String

from ..class_info import class_info_json
from ..errors import InputError
from . import params as node_params, qos
from .camera_input import Camera, FrameContext
from .conversions import numpy_to_image, scale_camera_info
from .log_throttle import problem_kind
from .process import StartupError

# (engine output name, published encoding)
OUTPUTS: Tuple[Tuple[str, str], ...] = (("labels", "mono8"), ("color", "rgb8"), ("overlay", "rgb8"),
                                        ("drivable", "mono8"), ("confidence", "mono8"))
TOGGLES = {"color": "publish_color", "overlay": "publish_overlay", "drivable": "publish_drivable",
           "confidence": "publish_confidence"}


def publishes(p: node_params.NodeParams, kind: str) -> bool:
    """Whether the parameters let output ``kind`` be published (labels always are)."""
    return kind not in TOGGLES or bool(getattr(p, TOGGLES[kind]))


def published_outputs(p: node_params.NodeParams) -> FrozenSet[str]:
    """Return the engine outputs the parameters enable: labels and every toggled-on output."""
    return frozenset(kind for kind, _enc in OUTPUTS if publishes(p, kind))


def resolve_drivable(requested: Sequence[str], classes: Sequence[str], meta: Dict[str, Any]) -> Tuple[str, ...]:
    """Drivable class names: the requested ones, or the checkpoint's; all must be model classes."""
    names = tuple(requested) or tuple(meta.get("drivable_classes") or ())
    unknown = [n for n in names if n not in classes]
    if unknown:
        raise StartupError(f"parameter 'drivable_classes' names {unknown}, which the model does not have "
                           f"(its classes: {list(classes)})")
    return names


def input_size(ctx: FrameContext, res: Any) -> Tuple[int, int]:
    """(h, w) of the frame the outputs were computed from (what camera_info describes)."""
    if ctx.size is not None:
        return ctx.size
    if getattr(res, "input", None) is not None:
        return tuple(res.input.shape[:2])
    return tuple(res.labels.shape[:2])  # output_resolution input: the outputs have the decoded size


class OutputPublishing:
    """The node's output side: publishers per camera, the outputs wanted now, publishing results."""

    def _create_publishers(self, cam: Camera) -> None:
        out_qos = qos.output_qos()
        for kind, _enc in OUTPUTS:
            cam.publishers[kind] = self.create_publisher(Image, f"{cam.prefix}segmentation/{kind}", out_qos)
        cam.info_publisher = self.create_publisher(CameraInfo, f"{cam.prefix}segmentation/camera_info", out_qos)
        cam.class_info_publisher = self.create_publisher(String, f"{cam.prefix}segmentation/class_info",
                                                         qos.latched_qos())
        if self.params.bev_enable:  # segmentation/drivable_grid (+ drivable_bev)
            cam.bev = self._bev_output(cam, out_qos)

    def _destroy_publishers(self, cam: Camera) -> None:
        bev_pubs = cam.bev.publishers() if cam.bev is not None else ()
        if cam.bev is not None:
            cam.bev.release()
            cam.bev = None
        for pub in (*cam.publishers.values(), cam.info_publisher, cam.class_info_publisher, *bev_pubs):
            if pub is not None:
                self.destroy_publisher(pub)

    def _bev_output(self, cam: Camera, out_qos: Any) -> Any:
        from .bev_output import BevOutput, tf_camera_pose  # nav_msgs only when the grid is asked for

        if len(self.params.cameras) > 1:  # one bev.camera_to_ground cannot be every camera's pose
            raise StartupError("bev.enable supports one camera (one bev.camera_to_ground); run one node "
                               "per camera for several grids")
        names = self._drivable
        if not names:
            raise StartupError("bev.enable needs drivable classes: set 'drivable_classes' (the model's "
                               "checkpoint names none)")
        try:
            grid, transform = node_params.bev_setup(self.params)
        except node_params.ParameterError as exc:
            raise StartupError(str(exc)) from None
        tf = tf_camera_pose(self, grid.frame_id) if self.params.bev_use_tf else None
        log = self.get_logger()
        return BevOutput(self, cam.prefix, grid, transform, [self._classes.index(n) for n in names],
                         self.params.bev_publish_image, out_qos, tf=tf,
                         log=lambda level, text: getattr(log, level)(text))

    def _class_info_json(self) -> str:
        meta = getattr(self._seg, "meta", {}) or {}
        # One definition shared with `pspnet bag`, so recorded and live class_info agree.
        return class_info_json(meta, model_name=self._model_name, palette=self._seg.palette,
                               drivable_classes=self._drivable,
                               inference_size=self._inference_size)

    def _publish_class_info(self, cam: Camera) -> None:
        cam.class_info_publisher.publish(String(data=self._class_info_json()))

    def _wanted_outputs(self, cam: Camera) -> FrozenSet[str]:
        p = self.params
        wanted = set()
        for kind, _enc in OUTPUTS:
            if publishes(p, kind) and cam.publishers[kind].get_subscription_count() > 0:
                wanted.add(kind)
        if cam.info_publisher.get_subscription_count() > 0:
            # segmentation/camera_info alone is worth a frame too (`ros2 topic echo` of it must
            # not hang); it needs the output size, which labels give.
            wanted.add("labels")
        if cam.bev is not None and cam.bev.wanted():
            wanted.add("labels")  # the grid is projected from the labels
        return frozenset(wanted)

    def _needs_input_size(self, cam: Camera) -> bool:
        """Whether an output (camera_info, the grid) needs the size of the decoded input frame."""
        return bool(cam.info_publisher.get_subscription_count() or (cam.bev is not None and cam.bev.wanted()))

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
            if array is None or not publishes(p, kind):
                continue
            cam.publishers[kind].publish(numpy_to_image(array, encoding, ctx.header))
        if ctx.info is not None and res.labels is not None and cam.info_publisher.get_subscription_count():
            in_size = input_size(ctx, res)
            try:
                cam.info_publisher.publish(scale_camera_info(ctx.info, in_size, res.labels.shape[:2], ctx.header))
            except InputError as exc:
                self._camera_info_problem(cam, "camera_info", f"{cam.prefix}camera_info not republished", exc)
        if cam.bev is not None and res.labels is not None and cam.bev.wanted():
            try:
                cam.bev.publish(ctx.header, ctx.info, input_size(ctx, res), res.labels)
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
