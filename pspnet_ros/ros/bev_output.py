"""``segmentation/drivable_grid`` (nav_msgs/OccupancyGrid) and ``segmentation/drivable_bev`` of one camera.

The node creates one :class:`BevOutput` per camera when ``bev.enable`` is set and hands it each
result's labels; the geometry is :mod:`pspnet_ros.bev` (one cached lookup table per camera_info
and transform). The grid carries the input's stamp and the grid frame (``bev.frame_id``), not the
camera's frame_id: its cells are coordinates in that frame, so the transform used is the camera's
full pose in it: from TF where ``tf2_ros`` is installed (:func:`tf_camera_pose`), else (and while
TF has none) from the ``bev.camera_*`` / ``bev.camera_to_ground`` parameters.
"""

from __future__ import annotations

import array
from typing import Any, Callable, Optional, Sequence, Tuple

import numpy as np
from nav_msgs.msg import OccupancyGrid
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from .. import bev
from ..camera_info import scale_camera_info_fields
from ..errors import InputError
from .conversions import numpy_to_image

GRID_TOPIC = "segmentation/drivable_grid"
IMAGE_TOPIC = "segmentation/drivable_bev"


def occupancy_grid_msg(occupancy: np.ndarray, grid: bev.GridSpec, header: Header) -> OccupancyGrid:
    """Build an OccupancyGrid of (H, W) int8 ``occupancy`` on ``grid``, stamped like ``header``.

    ``info.origin`` is the outer corner of cell (0, 0) at (x_min, y_min, 0) with an identity
    orientation; ``data`` is row-major, rows along y, columns along x (``pspnet_ros.bev``).
    """
    if occupancy.shape != grid.shape or occupancy.dtype != np.int8:
        raise ValueError(f"occupancy must be {grid.shape} int8, got {occupancy.shape} {occupancy.dtype}")
    msg = OccupancyGrid()
    msg.header.stamp = header.stamp
    msg.header.frame_id = grid.frame_id
    msg.info.map_load_time = header.stamp
    msg.info.resolution = float(grid.resolution)
    msg.info.width, msg.info.height = grid.width, grid.height
    msg.info.origin.position.x, msg.info.origin.position.y = grid.origin
    msg.info.origin.orientation.w = 1.0
    msg.data = array.array("b", np.ascontiguousarray(occupancy).tobytes())  # one copy, no per-cell check
    return msg


# camera frame_id -> (4, 4) camera->grid transform, or None while TF has none
PoseLookup = Callable[[str], Optional[np.ndarray]]


def tf_camera_pose(node: Any, grid_frame: str) -> Optional[Tuple[PoseLookup, Callable[[], None]]]:
    """Where ``tf2_ros`` imports: (lookup, release) of camera poses in ``grid_frame`` from TF.

    ``lookup(camera_frame)`` gives the latest transform taking ``camera_frame`` points (the
    image's optical frame) into ``grid_frame`` as a (4, 4) matrix, or None when TF has none;
    ``release()`` removes the /tf and /tf_static subscriptions. None without ``tf2_ros`` (it is
    optional: the parameters then give the pose). Not exercised by the tests of this setup,
    which has no tf2 wheel: keep it this small.
    """
    try:
        import tf2_ros
        from rclpy.time import Time
    except ImportError:
        return None
    buffer = tf2_ros.Buffer()
    listener = tf2_ros.TransformListener(buffer, node)

    def lookup(camera_frame: str) -> Optional[np.ndarray]:
        try:
            msg = buffer.lookup_transform(grid_frame, camera_frame, Time())
        except tf2_ros.TransformException:
            return None
        t, q = msg.transform.translation, msg.transform.rotation
        return bev.rigid_from_quaternion((t.x, t.y, t.z), (q.x, q.y, q.z, q.w))

    return lookup, listener.unregister


class BevOutput:
    """The BEV publishers of one camera and the projection of its labels onto the grid.

    ``camera_to_ground`` is the pose from the parameters; ``tf`` (from :func:`tf_camera_pose`)
    is asked first for each frame's camera frame_id when given. ``log(level, text)`` reports
    which source serves each camera frame, once per change.
    """

    def __init__(self, node: Any, prefix: str, grid: bev.GridSpec, camera_to_ground: np.ndarray,
                 drivable_ids: Sequence[int], publish_image: bool, qos: Any,
                 tf: Optional[Tuple[PoseLookup, Callable[[], None]]] = None,
                 log: Optional[Callable[[str, str], None]] = None) -> None:
        self.grid = grid
        self.camera_to_ground = camera_to_ground
        self.drivable_ids = tuple(int(i) for i in drivable_ids)
        self._tf_lookup, self._tf_release = tf if tf is not None else (None, None)
        self._log = log or (lambda level, text: None)
        self._source: dict = {}  # camera frame_id -> "tf" | "parameters" (last reported)
        self.grid_publisher = node.create_publisher(OccupancyGrid, f"{prefix}{GRID_TOPIC}", qos)
        self.image_publisher = (node.create_publisher(Image, f"{prefix}{IMAGE_TOPIC}", qos)
                                if publish_image else None)

    def publishers(self) -> Tuple[Any, ...]:
        """Return the publishers this output created (the node destroys them at cleanup)."""
        return tuple(p for p in (self.grid_publisher, self.image_publisher) if p is not None)

    def release(self) -> None:
        """Drop the TF subscriptions (cleanup); the publishers are the node's to destroy."""
        if self._tf_release is not None:
            self._tf_release()
            self._tf_lookup = self._tf_release = None

    def transform_for(self, camera_frame: str) -> np.ndarray:
        """(4, 4) camera->grid transform for a frame from ``camera_frame``: TF's, else the parameters'."""
        found = self._tf_lookup(camera_frame) if self._tf_lookup is not None and camera_frame else None
        source = "tf" if found is not None else "parameters"
        if self._tf_lookup is not None and self._source.get(camera_frame) != source:
            self._source[camera_frame] = source
            if source == "tf":
                self._log("info", f"{GRID_TOPIC}: camera pose from TF ('{camera_frame}' -> '{self.grid.frame_id}')")
            else:
                self._log("warning", f"{GRID_TOPIC}: TF has no transform from '{camera_frame}' to "
                                     f"'{self.grid.frame_id}' yet; using the bev.camera_* parameters")
        return found if found is not None else self.camera_to_ground

    def wanted(self) -> bool:
        """Whether anybody subscribes to the grid or its picture (else nothing is computed)."""
        return self.grid_publisher.get_subscription_count() > 0 or (
            self.image_publisher is not None and self.image_publisher.get_subscription_count() > 0)

    def publish(self, header: Header, info: Optional[Any], in_size: Tuple[int, int], labels: np.ndarray) -> None:
        """Project (h, w) uint8 ``labels`` (outputs of a frame of ``in_size``) and publish.

        Raises:
            InputError: no camera_info yet, or one that does not describe the frame (the caller
                counts and logs it; the other outputs are already out).
        """
        if info is None:
            raise InputError("no camera_info received yet: segmentation/drivable_grid needs the "
                             "camera's intrinsics (publish camera_info next to the image)")
        k = scale_camera_info_fields(info, in_size, labels.shape[:2]).k  # K of the labels' size
        try:
            proj = bev.projector(k, labels.shape[:2], self.transform_for(header.frame_id), self.grid)
        except bev.BevError as exc:
            raise InputError(f"camera_info: {exc}") from None
        occupancy = proj.occupancy_from_labels(labels, self.drivable_ids)
        self.grid_publisher.publish(occupancy_grid_msg(occupancy, self.grid, header))
        if self.image_publisher is not None and self.image_publisher.get_subscription_count() > 0:
            picture_header = Header(stamp=header.stamp, frame_id=self.grid.frame_id)
            self.image_publisher.publish(numpy_to_image(bev.occupancy_to_image(occupancy), "mono8",
                                                        picture_header))
