"""Node parameters: one table of specs -> ParameterDescriptors, validation, a frozen NodeParams.

Every parameter is declared with a description, its range or choices and ``read_only`` where a
change needs a restart (model, device, topics, QoS). The runtime-changeable ones are
``overlay_alpha``, the ``publish_*`` toggles and ``max_rate``; :func:`check_runtime_change`
validates them for the on-set callback. Validation lives in plain functions
(:func:`params_from_values`) so the rules are the same for the parameter file and for runtime
``ros2 param set``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any, Dict, Iterable, Optional, Sequence, Tuple

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType

CHOICES: Dict[str, Tuple[str, ...]] = {
    "precision": ("auto", "fp32", "fp16", "bf16", "int8"),
    "backend": ("auto", "torch", "onnxruntime", "openvino"),
    "output_resolution": ("input", "network"),
    "drop_policy": ("latest", "queue"),
    "input_transport": ("raw", "compressed"),
    "qos_reliability": ("auto", "reliable", "best_effort"),
}
RUNTIME = ("overlay_alpha", "publish_color", "publish_overlay", "publish_drivable",
           "publish_confidence", "max_rate")
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
# A relative or absolute ROS namespace: tokens of [A-Za-z_][A-Za-z0-9_]* separated by '/'.
_NAMESPACE = re.compile(r"^/?[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*$")


class ParameterError(ValueError):
    """A parameter value the node cannot run with; the message says which and what to do."""


@dataclass(frozen=True)
class NodeParams:
    """Validated node parameters (see config/pspnet.yaml for what each one means)."""

    checkpoint: str = "auto"
    device: str = "auto"
    precision: str = "auto"
    backend: str = "auto"
    inference_threads: int = 0  # 0: all cores
    inference_size: Optional[Tuple[int, int]] = None  # None: auto (aspect-true at the checkpoint's pixel budget)
    output_resolution: str = "input"
    overlay_alpha: float = 0.5
    drivable_classes: Tuple[str, ...] = ()  # (): the checkpoint's drivable_classes
    publish_color: bool = True
    publish_overlay: bool = True
    publish_drivable: bool = True
    publish_confidence: bool = False
    max_rate: float = 0.0  # Hz, 0: no cap
    drop_policy: str = "latest"
    input_transport: str = "raw"
    qos_reliability: str = "auto"
    cameras: Tuple[str, ...] = ()  # (): one camera, topics relative to the node namespace
    compile: bool = False
    cuda_graphs: bool = False
    max_batch: int = 4
    diagnostics_period: float = 1.0
    max_consecutive_failures: int = 10  # 0: never exit on failures
    # bev.*: segmentation/drivable_grid (see pspnet_ros.bev for the frames and conventions)
    bev_enable: bool = False
    bev_camera_to_ground: Tuple[float, ...] = ()  # (): from the pose (x, y, height, roll, pitch, yaw)
    bev_camera_height: float = 1.65
    bev_camera_pitch: float = 0.0
    bev_camera_roll: float = 0.0
    bev_camera_x: float = 0.0
    bev_camera_y: float = 0.0
    bev_camera_yaw: float = 0.0
    bev_use_tf: bool = True
    bev_frame_id: str = "base_footprint"
    bev_resolution: float = 0.05
    bev_forward_range: Tuple[float, float] = (6.0, 46.0)
    bev_lateral_range: Tuple[float, float] = (-10.0, 10.0)
    bev_publish_image: bool = True


_T = ParameterType
# name -> (ROS type, ROS default, description, floating range or None)
_SPECS: Dict[str, Tuple[int, Any, str, Optional[Tuple[float, float]]]] = {
    "checkpoint": (_T.PARAMETER_STRING, "auto",
                   "Model checkpoint (.pt) path, or 'auto' for the shipped KITTI road model for the "
                   "device (light model on CPU, strongest on CUDA).", None),
    "device": (_T.PARAMETER_STRING, "auto", "Inference device: auto, cpu, cuda or cuda:N.", None),
    "precision": (_T.PARAMETER_STRING, "auto",
                  "Inference precision: auto, fp32, fp16, bf16 or int8. auto: on CPU int8 when the "
                  "checkpoint's accuracy-checked .int8.onnx exists (pspnet quantize), else fp32; fp32 "
                  "on CUDA and with backend torch. int8 runs on CPU (onnxruntime/openvino); fp16 needs CUDA.", None),
    "backend": (_T.PARAMETER_STRING, "auto",
                "Inference runtime: auto, torch, onnxruntime or openvino. auto: the fastest installed "
                "CPU runtime for the precision (measured, see the README), torch on CUDA.", None),
    "inference_threads": (_T.PARAMETER_INTEGER, 0,
                          "CPU threads of the inference runtime, 0 = all cores. The runtimes do not "
                          "busy-wait, so the executor and DDS threads get the cores between frames.", None),
    "inference_size": (_T.PARAMETER_INTEGER_ARRAY, [0, 0],
                       "Network input size [height, width] in pixels. [0, 0] = auto: each camera "
                       "keeps its own aspect ratio at the pixel count the checkpoint was trained for "
                       "(the checkpoint's own size for its own camera, e.g. 288x400 for a 640x480 "
                       "camera with the KITTI model). Smaller is faster.", None),
    "output_resolution": (_T.PARAMETER_STRING, "input",
                          "Size of the published images: 'input' (camera resolution) or 'network' "
                          "(inference_size, cheaper).", None),
    "overlay_alpha": (_T.PARAMETER_DOUBLE, 0.5,
                      "Opacity of the class colours in segmentation/overlay (0 = camera image only, "
                      "1 = colours only). Changeable at runtime.", (0.0, 1.0)),
    "drivable_classes": (_T.PARAMETER_STRING_ARRAY, [""],
                         "Class names that make up segmentation/drivable; [''] uses the checkpoint's "
                         "drivable classes (road for the shipped models).", None),
    "publish_color": (_T.PARAMETER_BOOL, True,
                      "Publish segmentation/color (palette image). Changeable at runtime.", None),
    "publish_overlay": (_T.PARAMETER_BOOL, True,
                        "Publish segmentation/overlay (colours blended over the camera image). "
                        "Changeable at runtime.", None),
    "publish_drivable": (_T.PARAMETER_BOOL, True,
                         "Publish segmentation/drivable (mono8 0/255 mask). Changeable at runtime.", None),
    "publish_confidence": (_T.PARAMETER_BOOL, False,
                           "Publish segmentation/confidence (mono8 max class probability x 255; "
                           "costs a softmax). Changeable at runtime.", None),
    "max_rate": (_T.PARAMETER_DOUBLE, 0.0,
                 "Cap on processed frames per second per camera (0 = no cap); frames above the cap "
                 "are skipped before inference. Changeable at runtime.", (0.0, 1000.0)),
    "drop_policy": (_T.PARAMETER_STRING, "latest",
                    "'latest': a new frame replaces one still waiting (lowest latency, drops counted); "
                    "'queue': frames wait in a bounded queue (no drops until it is full).", None),
    "input_transport": (_T.PARAMETER_STRING, "raw",
                        "'raw': subscribe sensor_msgs/Image on 'image'; 'compressed': "
                        "sensor_msgs/CompressedImage (JPEG/PNG) on '<image>/compressed'.", None),
    "qos_reliability": (_T.PARAMETER_STRING, "auto",
                        "Input reliability: 'auto' matches what the camera publishers offer (as "
                        "ros2 bag record does, re-checked when publishers appear); 'reliable' or "
                        "'best_effort' force it.", None),
    "cameras": (_T.PARAMETER_STRING_ARRAY, [""],
                "Camera namespaces served by this node with one model, e.g. ['front', 'rear'] -> "
                "front/image -> front/segmentation/...; [''] = one camera with topics relative to "
                "the node namespace.", None),
    "compile": (_T.PARAMETER_BOOL, False,
                "torch.compile the model at start-up (slower start, faster frames on CUDA).", None),
    "cuda_graphs": (_T.PARAMETER_BOOL, False,
                    "Capture CUDA graphs of the network for batch sizes 1..max_batch at start-up "
                    "(CUDA only; fewer kernel launches per frame).", None),
    "max_batch": (_T.PARAMETER_INTEGER, 4,
                  "Most frames (of several cameras, or queued frames) in one forward pass.", None),
    "diagnostics_period": (_T.PARAMETER_DOUBLE, 1.0,
                           "Seconds between /diagnostics messages (and the statistics window).",
                           (0.1, 60.0)),
    "max_consecutive_failures": (_T.PARAMETER_INTEGER, 10,
                                 "Exit with code 3 (diagnostics ERROR first) after this many frames "
                                 "in a row failed in the engine (not bad input), or at once on a "
                                 "sticky CUDA error, so respawn restarts the node; 0 = never.", None),
    "bev.enable": (_T.PARAMETER_BOOL, False,
                   "Publish segmentation/drivable_grid (nav_msgs/OccupancyGrid): the drivable mask "
                   "projected onto the ground plane with camera_info and bev.camera_to_ground.", None),
    "bev.camera_to_ground": (_T.PARAMETER_DOUBLE_ARRAY, [0.0],
                             "Row-major 4x4 rigid transform from the camera's optical frame (x right, "
                             "y down, z forward) to the grid frame (REP-103: x forward, y left, z up, "
                             "z = 0 on the road): 16 numbers. [0.0] = not given: built from "
                             "bev.camera_x/y/height and bev.camera_roll/pitch/yaw.", None),
    "bev.camera_height": (_T.PARAMETER_DOUBLE, 1.65,
                          "Camera height above the road (z = 0 of bev.frame_id) in metres, when "
                          "bev.camera_to_ground is not given.", (0.01, 100.0)),
    "bev.camera_pitch": (_T.PARAMETER_DOUBLE, 0.0,
                         "Camera pitch in radians, positive = looking down (REP-103).", (-1.5, 1.5)),
    "bev.camera_roll": (_T.PARAMETER_DOUBLE, 0.0,
                        "Camera roll in radians about its forward axis, positive = right side down.",
                        (-1.5, 1.5)),
    "bev.camera_x": (_T.PARAMETER_DOUBLE, 0.0,
                     "Metres the camera is mounted ahead of the bev.frame_id origin (e.g. of "
                     "base_footprint), when bev.camera_to_ground is not given.", (-100.0, 100.0)),
    "bev.camera_y": (_T.PARAMETER_DOUBLE, 0.0,
                     "Metres the camera is mounted to the left of the bev.frame_id origin "
                     "(negative = right), when bev.camera_to_ground is not given.", (-100.0, 100.0)),
    "bev.camera_yaw": (_T.PARAMETER_DOUBLE, 0.0,
                       "Camera heading in radians relative to bev.frame_id's x axis, positive = "
                       "turned left (REP-103), when bev.camera_to_ground is not given.", (-3.1416, 3.1416)),
    "bev.frame_id": (_T.PARAMETER_STRING, "base_footprint",
                     "frame_id of the grid: the frame bev.camera_to_ground (or the bev.camera_* pose) "
                     "maps into, whose z = 0 is the road.", None),
    "bev.use_tf": (_T.PARAMETER_BOOL, True,
                   "Where tf2_ros is installed, take the camera pose from TF (the transform from the "
                   "image's frame_id to bev.frame_id); the bev.camera_* parameters serve while TF has "
                   "none (logged).", None),
    "bev.resolution": (_T.PARAMETER_DOUBLE, 0.05, "Grid cell size in metres.", (0.001, 10.0)),
    "bev.forward_range": (_T.PARAMETER_DOUBLE_ARRAY, [6.0, 46.0],
                          "[min, max] metres ahead (grid x) covered by the grid.", None),
    "bev.lateral_range": (_T.PARAMETER_DOUBLE_ARRAY, [-10.0, 10.0],
                          "[min, max] metres to the left (grid y, negative = right) covered by the grid.", None),
    "bev.publish_image": (_T.PARAMETER_BOOL, True,
                          "Also publish segmentation/drivable_bev (mono8 picture of the grid as seen "
                          "from above: forward right, left up; 255 drivable, 0 not, 128 unknown).", None),
}
# integer parameters -> inclusive range
_INT_RANGES: Dict[str, Tuple[int, int]] = {"max_batch": (1, 16), "max_consecutive_failures": (0, 100000),
                                           "inference_threads": (0, 256)}


def field_name(name: str) -> str:
    """Return the NodeParams field of a ROS parameter name ('bev.enable' -> 'bev_enable')."""
    return name.replace(".", "_")


def descriptor(name: str, managed: bool = False) -> ParameterDescriptor:
    """Build the ParameterDescriptor of ``name``.

    A managed (lifecycle) node declares no parameter read-only: its configure step reads them,
    so they may change while it is unconfigured; its on-set callback refuses the change in any
    other state (see :func:`check_change`).
    """
    ros_type, _default, description, frange = _SPECS[name]
    d = ParameterDescriptor(name=name, type=ros_type, description=description,
                            read_only=name not in RUNTIME and not managed)
    if name in CHOICES:
        d.additional_constraints = "one of: " + ", ".join(CHOICES[name])
    if frange is not None:
        d.floating_point_range = [FloatingPointRange(from_value=frange[0], to_value=frange[1], step=0.0)]
    if name in _INT_RANGES:
        lo, hi = _INT_RANGES[name]
        d.integer_range = [IntegerRange(from_value=lo, to_value=hi, step=1)]
    return d


def default_values() -> Dict[str, Any]:
    return {name: spec[1] for name, spec in _SPECS.items()}


def _clean_list(value: Any) -> Tuple[str, ...]:
    """Clean a string list from YAML/CLI: None (an empty YAML list) and '' entries mean 'none given'."""
    if value is None:
        return ()
    return tuple(str(v).strip() for v in value if str(v).strip())


def _check_choice(name: str, value: Any) -> str:
    if value not in CHOICES[name]:
        raise ParameterError(f"parameter '{name}' is {value!r}; it must be one of: "
                             + ", ".join(CHOICES[name]))
    return value


def _check_range(name: str, value: Any) -> float:
    lo, hi = _SPECS[name][3]  # type: ignore[misc]
    value = float(value)
    if not lo <= value <= hi:
        raise ParameterError(f"parameter '{name}' is {value}; it must be between {lo} and {hi}")
    return value


def check_value(name: str, value: Any) -> Any:
    """Validate one parameter value; return the normalized Python value or raise ParameterError."""
    if name in CHOICES:
        return _check_choice(name, value)
    if name in ("overlay_alpha", "max_rate", "diagnostics_period", "bev.camera_height", "bev.camera_pitch",
                "bev.camera_roll", "bev.camera_x", "bev.camera_y", "bev.camera_yaw", "bev.resolution"):
        return _check_range(name, value)
    if name == "bev.camera_to_ground":
        numbers = tuple(float(v) for v in (value or ()))
        if numbers in ((), (0.0,)):
            return ()
        from ..bev import BevError, check_rigid

        try:
            return tuple(check_rigid(numbers, "parameter 'bev.camera_to_ground'").ravel().tolist())
        except BevError as exc:
            raise ParameterError(f"{exc}; or set [0.0] and bev.camera_x/y/height/roll/pitch/yaw") from None
    if name in ("bev.forward_range", "bev.lateral_range"):
        rng = tuple(float(v) for v in (value or ()))
        if len(rng) != 2 or not rng[0] < rng[1]:
            raise ParameterError(f"parameter '{name}' is {list(rng)}; give [min, max] in metres with min < max")
        return rng
    if name == "bev.frame_id":
        if not str(value).strip():
            raise ParameterError("parameter 'bev.frame_id' is empty; name the grid's frame (e.g. base_footprint)")
        return str(value).strip()
    if name == "device":
        if not _DEVICE.match(str(value)):
            raise ParameterError(f"parameter 'device' is {value!r}; use auto, cpu, cuda or cuda:N")
        return str(value)
    if name == "checkpoint":
        if not str(value).strip():
            raise ParameterError("parameter 'checkpoint' is empty; give a .pt path or 'auto'")
        return str(value).strip()
    if name == "inference_size":
        size = tuple(int(v) for v in (value or ()))
        if size in ((), (0, 0)):
            return None
        if len(size) != 2 or not all(16 <= v <= 8192 for v in size):
            raise ParameterError(f"parameter 'inference_size' is {list(size)}; give [height, width] "
                                 "with each between 16 and 8192, or [0, 0] for auto (each camera's aspect)")
        return size
    if name == "drivable_classes":
        return _clean_list(value)
    if name == "cameras":
        cams = tuple(c.rstrip("/") for c in _clean_list(value))
        for cam in cams:
            if not _NAMESPACE.match(cam):
                raise ParameterError(f"parameter 'cameras' has {cam!r}, not a valid ROS namespace "
                                     "(letters, digits, '_' and '/', not starting with a digit)")
        dupes = sorted({c for c in cams if cams.count(c) > 1})
        if dupes:
            raise ParameterError(f"parameter 'cameras' lists {', '.join(dupes)} more than once")
        return cams
    if name in _INT_RANGES:
        lo, hi = _INT_RANGES[name]
        if isinstance(value, bool) or int(value) != value or not lo <= int(value) <= hi:
            raise ParameterError(f"parameter '{name}' is {value!r}; it must be an integer from {lo} to {hi}")
        return int(value)
    if name in ("publish_color", "publish_overlay", "publish_drivable", "publish_confidence", "compile",
                "cuda_graphs", "bev.enable", "bev.publish_image", "bev.use_tf"):
        return bool(value)
    raise ParameterError(f"unknown parameter {name!r}")


def params_from_values(values: Dict[str, Any]) -> NodeParams:
    """Validate raw values into NodeParams (missing keys take their defaults)."""
    merged = {**default_values(), **values}
    params = NodeParams(**{field_name(name): check_value(name, merged[name]) for name in _SPECS})
    if params.bev_enable:
        bev_setup(params)  # the grid and the transform together, refused at start-up
    return params


def bev_setup(p: NodeParams) -> Tuple[Any, Any]:
    """(pspnet_ros.bev.GridSpec, (4, 4) camera_to_ground) from the bev.* parameters.

    Raises:
        ParameterError: a grid or transform the projection cannot use.
    """
    from ..bev import BevError, GridSpec, camera_to_ground_from_pose, check_rigid

    try:
        grid = GridSpec(p.bev_resolution, p.bev_forward_range, p.bev_lateral_range, p.bev_frame_id)
        transform = (check_rigid(p.bev_camera_to_ground) if p.bev_camera_to_ground else
                     camera_to_ground_from_pose(p.bev_camera_height, p.bev_camera_pitch, p.bev_camera_roll,
                                                x=p.bev_camera_x, y=p.bev_camera_y, yaw=p.bev_camera_yaw))
    except BevError as exc:
        raise ParameterError(f"bev.* parameters: {exc}") from None
    return grid, transform


def check_runtime_change(params: NodeParams, name: str, value: Any) -> Tuple[Optional[str], NodeParams]:
    """(reason it is refused or None, params with the change applied)."""
    if name not in RUNTIME:
        return f"parameter '{name}' is read-only: restart the node to change it", params
    try:
        return None, replace(params, **{name: check_value(name, value)})
    except (ParameterError, TypeError, ValueError) as exc:
        return str(exc), params


def check_change(params: NodeParams, name: str, value: Any, configured: bool,
                 state: str = "active") -> Tuple[Optional[str], NodeParams]:
    """Like :func:`check_runtime_change`, for a managed node in lifecycle ``state``.

    Runtime parameters change in any state. The others change only while the node is
    unconfigured (configure reads them); ``configured`` is False then.
    """
    if name in RUNTIME or configured:
        reason, new = check_runtime_change(params, name, value)
        if reason and name not in RUNTIME:
            reason = (f"parameter '{name}' can only change while the node is unconfigured "
                      f"(it is {state}): deactivate and clean it up first")
        return reason, new
    try:
        check_value(name, value)
    except (ParameterError, TypeError, ValueError) as exc:
        return str(exc), params
    return None, params


def declare(node: Any, managed: bool = False) -> NodeParams:
    """Declare every parameter on ``node`` and return them validated.

    Raises:
        ParameterError: wrong type, out of range, unknown choice (with the parameter's name).
    """
    from rclpy.exceptions import ParameterException

    values: Dict[str, Any] = {}
    for name, (_ros_type, default, _desc, _range) in _SPECS.items():
        try:
            values[name] = node.declare_parameter(name, default, descriptor(name, managed)).value
        except ParameterException as exc:
            raise ParameterError(_describe_declare_error(name, exc)) from None
    return params_from_values(values) if not managed else NodeParams()


def current(node: Any) -> NodeParams:
    """Read the node's declared parameters as they are now, validated (a managed node's configure).

    Raises:
        ParameterError: a value the node cannot run with (with the parameter's name).
    """
    return params_from_values({name: node.get_parameter(name).value for name in _SPECS})


def _describe_declare_error(name: str, exc: Exception) -> str:
    text = str(exc)
    ros_type = _SPECS[name][0]
    type_names = {_T.PARAMETER_STRING: "a string", _T.PARAMETER_DOUBLE: "a number (e.g. 1.0)",
                  _T.PARAMETER_INTEGER: "an integer",
                  _T.PARAMETER_BOOL: "true or false", _T.PARAMETER_INTEGER_ARRAY: "a list of integers",
                  _T.PARAMETER_DOUBLE_ARRAY: "a list of numbers with decimal points (e.g. [1.0, 0.0])",
                  _T.PARAMETER_STRING_ARRAY: "a list of strings"}
    if "type" in text.lower():
        return f"parameter '{name}' has the wrong type; it must be {type_names.get(ros_type, 'another type')} ({text})"
    frange = _SPECS[name][3] or _INT_RANGES.get(name)
    if frange is not None:
        return f"parameter '{name}' must be between {frange[0]} and {frange[1]} ({text})"
    return f"parameter '{name}': {text}"


def unknown_overrides(node: Any) -> Iterable[str]:
    """Names in the parameter file / command line that the node does not know (typos)."""
    overrides: Sequence[str] = list(getattr(node, "_parameter_overrides", {}) or {})
    known = set(_SPECS) | {"use_sim_time", "start_type_description_service"}
    return sorted(n for n in overrides if n not in known and not n.startswith("qos_overrides."))
