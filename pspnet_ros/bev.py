"""Bird's-eye view: per-pixel road masks projected onto the ground plane (the one BEV contract).

ROS-free; the node (``segmentation/drivable_grid``), ``pspnet eval --bev`` and ``pspnet
make-bag`` all use this module, so the grid a robot sees and the grid the benchmark scores are
computed the same way.

Frames and conventions
    camera: the optical frame of the image's ``K`` (x right, y down, z forward), images
        undistorted (rectified), pixel centres at integer coordinates (OpenCV / ROS).
    ground: REP-103, on the road plane (z = 0 is the road, z up), x forward, y left: the
        grid's frame, e.g. ``base_footprint``. ``camera_to_ground_from_pose`` places the camera
        at (x, y, height) in it with a yaw about z; with x = y = yaw = 0 its origin is the road
        point below the camera (true for ``base_footprint`` only for a camera mounted above it).
    camera_to_ground: the (4, 4) rigid transform taking camera points to ground points,
        ``p_ground = T @ p_camera`` (what ``tf2`` calls the transform of the camera frame in the
        ground frame).
    grid: ``GridSpec``: cells of ``resolution`` metres over ``x_range`` (forward) x ``y_range``
        (lateral). Arrays are (height, width) = (cells along y, cells along x), row-major, cell
        (row r, column c) centred at ``x = x_min + (c + 0.5) * res``, ``y = y_min + (r + 0.5) * res``:
        exactly ``nav_msgs/OccupancyGrid`` with ``info.origin`` at ``(x_min, y_min, 0)`` and an
        identity orientation.
    occupancy: int8, ``FREE`` (0) drivable, ``OCCUPIED`` (100) not drivable, ``UNKNOWN`` (-1)
        outside the image, behind the camera or outside the valid area.

KITTI road: ``read_kitti_calib`` parses a calibration file; ``KittiCalib.camera_to_ground``
follows the devkit's chain ``x = P2 @ R0_rect @ inv(Tr_cam_to_road) @ X_road`` (road frame x
right, y down, z forward) and expresses it in the frames above.

The projection is one lookup table per (K, image size, transform, grid): ``GroundProjector``
computes it once (``projector`` caches the last few), then each frame costs one ``cv2.remap``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Dict, Iterable, Optional, Sequence, Tuple, Union

import numpy as np

FREE, OCCUPIED, UNKNOWN = 0, 100, -1
# Camera optical axes expressed in REP-103 ground axes (camera level, looking along x):
# optical z (forward) -> ground x, optical x (right) -> ground -y, optical y (down) -> ground -z.
OPTICAL_TO_GROUND = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
# KITTI road frame (x right, y down, z forward, y = 0 on the road) -> REP-103 ground axes.
KITTI_ROAD_TO_GROUND = OPTICAL_TO_GROUND
MAX_GRID_CELLS = 4096  # per side: a 0.05 m grid 200 m long; larger is a units mistake
_IGNORE = 255  # label value of cells that no pixel covers (no class id reaches 255)
_OUTSIDE = -1.0e5  # map coordinate of invalid cells: far outside any image, so remap fills them


class BevError(ValueError):
    """A grid, transform or calibration the projection cannot use; the message says why."""


@dataclass(frozen=True)
class GridSpec:
    """Ground grid: ``resolution`` m cells over ``x_range`` (forward) x ``y_range`` (left), m.

    Defaults are the KITTI road devkit's BEV: 0.05 m cells, 6..46 m ahead, -10..10 m lateral
    (800 x 400 cells).
    """

    resolution: float = 0.05
    x_range: Tuple[float, float] = (6.0, 46.0)
    y_range: Tuple[float, float] = (-10.0, 10.0)
    frame_id: str = "base_footprint"

    def __post_init__(self) -> None:
        res = float(self.resolution)
        if not (math.isfinite(res) and res > 0):
            raise BevError(f"grid resolution must be > 0 metres, got {self.resolution}")
        for name, rng in (("forward (x)", self.x_range), ("lateral (y)", self.y_range)):
            if len(rng) != 2 or not all(math.isfinite(float(v)) for v in rng) or not rng[0] < rng[1]:
                raise BevError(f"grid {name} range must be [min, max] with min < max, got {list(rng)}")
            cells = (rng[1] - rng[0]) / res
            if cells < 1 or cells > MAX_GRID_CELLS:
                raise BevError(f"grid {name} range {list(rng)} at {res} m is {cells:.0f} cells; "
                               f"it must be 1..{MAX_GRID_CELLS} (check the units: metres)")
        if not self.frame_id:
            raise BevError("grid frame_id is empty: name the ground frame (e.g. base_footprint)")
        object.__setattr__(self, "resolution", res)
        object.__setattr__(self, "x_range", (float(self.x_range[0]), float(self.x_range[1])))
        object.__setattr__(self, "y_range", (float(self.y_range[0]), float(self.y_range[1])))

    @property
    def width(self) -> int:
        """Cells along x (forward): the OccupancyGrid's ``info.width``, the array's columns."""
        return int(round((self.x_range[1] - self.x_range[0]) / self.resolution))

    @property
    def height(self) -> int:
        """Cells along y (lateral): the OccupancyGrid's ``info.height``, the array's rows."""
        return int(round((self.y_range[1] - self.y_range[0]) / self.resolution))

    @property
    def shape(self) -> Tuple[int, int]:
        """(height, width) of grid arrays."""
        return self.height, self.width

    @property
    def origin(self) -> Tuple[float, float]:
        """(x, y) of the outer corner of cell (0, 0): the OccupancyGrid's ``info.origin``."""
        return self.x_range[0], self.y_range[0]

    def cell_centers(self) -> Tuple[np.ndarray, np.ndarray]:
        """(xs (width,), ys (height,)) float64 cell-centre coordinates in metres."""
        x0, y0 = self.origin
        res = self.resolution
        return x0 + (np.arange(self.width) + 0.5) * res, y0 + (np.arange(self.height) + 0.5) * res

    def cell_of(self, x: float, y: float) -> Tuple[int, int]:
        """(row, column) of the cell containing ground point (x, y); BevError outside the grid."""
        c = int(math.floor((x - self.x_range[0]) / self.resolution))
        r = int(math.floor((y - self.y_range[0]) / self.resolution))
        if not (0 <= r < self.height and 0 <= c < self.width):
            raise BevError(f"point ({x}, {y}) is outside the grid")
        return r, c


# ------------------------------------------------------------------------------ transforms

def _rot_x(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[1.0, 0, 0], [0, c, -s], [0, s, c]])


def _rot_y(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0, s], [0, 1.0, 0], [-s, 0, c]])


def _rot_z(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def camera_to_ground_from_pose(height: float, pitch: float = 0.0, roll: float = 0.0, *, x: float = 0.0,
                               y: float = 0.0, yaw: float = 0.0) -> np.ndarray:
    """(4, 4) float64 camera->ground transform of a camera ``height`` m above the road.

    The camera's optical centre is at (``x``, ``y``, ``height``) metres in the ground frame
    (e.g. ``base_footprint``: ``x`` = how far ahead of it the camera is mounted). ``roll``,
    ``pitch`` and ``yaw`` are radians, REP-103 fixed axes (R = Rz(yaw) Ry(pitch) Rx(roll), the
    right-hand rule about the ground's x, y, z): positive pitch tilts the camera down towards
    the road, positive roll lowers its right side, positive yaw turns it to the left. With
    ``x = y = yaw = 0`` the ground origin is the road point directly below the camera and the
    grid's x axis is the camera's heading.
    """
    if not (math.isfinite(height) and height > 0):
        raise BevError(f"camera height must be > 0 metres above the road, got {height}")
    for name, angle in (("pitch", pitch), ("roll", roll)):
        if not (math.isfinite(angle) and abs(angle) < math.pi / 2):
            raise BevError(f"camera {name} must be radians in (-pi/2, pi/2), got {angle}")
    for name, value in (("x", x), ("y", y), ("yaw", yaw)):
        if not math.isfinite(value):
            raise BevError(f"camera {name} must be a finite number, got {value}")
    t = np.eye(4)
    t[:3, :3] = _rot_z(yaw) @ _rot_y(pitch) @ _rot_x(roll) @ OPTICAL_TO_GROUND
    t[:3, 3] = (x, y, height)
    return t


def rigid_from_quaternion(translation: Sequence[float], quaternion: Sequence[float]) -> np.ndarray:
    """(4, 4) float64 transform of ``translation`` (x, y, z) and unit ``quaternion`` (x, y, z, w).

    What a ``geometry_msgs/Transform`` (e.g. a TF lookup) holds, as a matrix for
    ``camera_to_ground``. Raises BevError for a zero or non-finite quaternion.
    """
    q = np.asarray(quaternion, dtype=np.float64)
    norm = float(np.linalg.norm(q)) if q.size == 4 else 0.0
    if not (math.isfinite(norm) and norm > 1e-9) or not np.isfinite(translation).all():
        raise BevError(f"not a rigid transform: translation {list(translation)}, quaternion {list(quaternion)}")
    qx, qy, qz, qw = q / norm
    t = np.eye(4)
    t[:3, :3] = [[1 - 2 * (qy * qy + qz * qz), 2 * (qx * qy - qz * qw), 2 * (qx * qz + qy * qw)],
                 [2 * (qx * qy + qz * qw), 1 - 2 * (qx * qx + qz * qz), 2 * (qy * qz - qx * qw)],
                 [2 * (qx * qz - qy * qw), 2 * (qy * qz + qx * qw), 1 - 2 * (qx * qx + qy * qy)]]
    t[:3, 3] = [float(v) for v in translation]
    return t


def check_rigid(matrix: Union[Sequence[float], np.ndarray], what: str = "camera_to_ground") -> np.ndarray:
    """``matrix`` (16 numbers row-major, or (4, 4)) as a float64 (4, 4) rigid transform.

    Raises:
        BevError: wrong size, not finite, last row not [0, 0, 0, 1], rotation not orthonormal
            with determinant +1 (tolerance 1e-3, enough for 7-digit calibration files).
    """
    m = np.asarray(matrix, dtype=np.float64)
    if m.size != 16:
        raise BevError(f"{what} must be 16 numbers (a row-major 4x4 transform), got {m.size}")
    m = m.reshape(4, 4)
    if not np.isfinite(m).all():
        raise BevError(f"{what} has non-finite entries")
    if not np.allclose(m[3], [0, 0, 0, 1], atol=1e-9):
        raise BevError(f"{what}'s last row must be [0, 0, 0, 1], got {m[3].tolist()}")
    r = m[:3, :3]
    if not np.allclose(r @ r.T, np.eye(3), atol=1e-3) or np.linalg.det(r) < 0:
        raise BevError(f"{what}'s rotation part is not a rotation (orthonormal, det +1): "
                       f"{r.round(4).tolist()}")
    return m


def camera_height(camera_to_ground: np.ndarray) -> float:
    """Height of the camera centre above the road plane (z of its origin in ground), metres."""
    return float(np.asarray(camera_to_ground)[2, 3])


# ----------------------------------------------------------------------- KITTI calibration

@dataclass(frozen=True)
class KittiCalib:
    """The matrices of one KITTI calibration file that the road benchmark uses.

    p2: (3, 4) projection of rectified camera-0 points into ``image_2``. r0_rect: (3, 3)
    rectifying rotation. tr_cam_to_road: (3, 4) rigid transform camera-0 (unrectified) -> road
    (x right, y down, z forward, road plane y = 0). All float64.
    """

    p2: np.ndarray
    r0_rect: np.ndarray
    tr_cam_to_road: np.ndarray
    source: str = ""

    @property
    def k(self) -> np.ndarray:
        """(3, 3) intrinsics of ``image_2`` (the left part of P2)."""
        return self.p2[:, :3].copy()

    def camera_to_ground(self) -> np.ndarray:
        """(4, 4) transform camera-2 optical frame (the frame of ``k``) -> REP-103 ground.

        The devkit projects road points with ``P2 @ R0_rect @ inv(Tr_cam_to_road)``. Writing
        ``P2 = K [I | b]`` (b = inv(K) @ P2[:, 3], the offset of camera 2 from the rectified
        camera 0), camera-2 coordinates are ``R0_rect @ inv(Tr_cam_to_road) @ X_road + b``, so
        camera-2 -> road is ``Tr_cam_to_road @ inv(R0_rect) @ [I | -b]``; then road axes ->
        REP-103 axes.
        """
        k = self.k
        b = np.linalg.solve(k, self.p2[:, 3])
        shift = np.eye(4)
        shift[:3, 3] = -b
        r0 = np.eye(4)
        r0[:3, :3] = self.r0_rect
        road = np.eye(4)
        road[:3, :] = self.tr_cam_to_road
        axes = np.eye(4)
        axes[:3, :3] = KITTI_ROAD_TO_GROUND
        t = axes @ road @ np.linalg.inv(r0) @ shift
        # R0_rect and the calibration's 7 digits leave the rotation orthonormal to ~1e-6:
        # re-orthonormalize so the result passes check_rigid exactly.
        u, _, vt = np.linalg.svd(t[:3, :3])
        t[:3, :3] = u @ vt
        return t


_KITTI_KEYS = {"P2": (3, 4), "R0_rect": (3, 3), "Tr_cam_to_road": (3, 4)}


def read_kitti_calib(path: Union[str, Path]) -> KittiCalib:
    """Parse a KITTI calibration text file (``KEY: v1 v2 ...`` lines) into a ``KittiCalib``.

    Raises:
        BevError: the file is unreadable, or P2 / R0_rect / Tr_cam_to_road is missing or has the
            wrong number of values (the message names the file and the key).
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise BevError(f"cannot read KITTI calibration {path}: {exc}") from exc
    values: Dict[str, np.ndarray] = {}
    for n, line in enumerate(text.splitlines(), 1):
        key, sep, rest = line.partition(":")
        if not sep or key.strip() not in _KITTI_KEYS:
            continue
        try:
            values[key.strip()] = np.array([float(v) for v in rest.split()], dtype=np.float64)
        except ValueError as exc:
            raise BevError(f"{path}:{n}: {key.strip()} is not a list of numbers ({exc})") from None
    out = {}
    for key, shape in _KITTI_KEYS.items():
        if key not in values:
            raise BevError(f"{path}: no {key} line (a KITTI road calibration file has P0..P3, "
                           "R0_rect, Tr_velo_to_cam, Tr_imu_to_velo and Tr_cam_to_road)")
        if values[key].size != shape[0] * shape[1]:
            raise BevError(f"{path}: {key} has {values[key].size} values, expected {shape[0] * shape[1]}")
        out[key] = values[key].reshape(shape)
    return KittiCalib(out["P2"], out["R0_rect"], out["Tr_cam_to_road"], source=str(path))


# ------------------------------------------------------------------------------ projection

def _check_k(k: Union[Sequence[float], np.ndarray]) -> np.ndarray:
    m = np.asarray(k, dtype=np.float64)
    if m.size != 9:
        raise BevError(f"K must be 9 numbers (3x3), got {m.size}")
    m = m.reshape(3, 3)
    if not np.isfinite(m).all() or m[0, 0] <= 0 or m[1, 1] <= 0 or not np.allclose(m[2], [0, 0, 1]):
        raise BevError(f"K is not a pinhole camera matrix (fx, fy > 0, last row [0, 0, 1]): "
                       f"{m.round(3).tolist()} (uncalibrated camera_info?)")
    return m


class GroundProjector:
    """The image -> grid lookup table of one camera: built once, applied per frame.

    Args:
        k: (3, 3) intrinsics of the images that will be warped (of *their* size).
        image_size: (h, w) of those images.
        camera_to_ground: (4, 4) rigid transform (see the module docstring).
        grid: the ground grid.

    Attributes:
        map_u, map_v: (H, W) float32 pixel coordinates sampled for each cell (far outside the
            image for invalid cells). valid: (H, W) bool, the cells whose centre is on the ground
            in front of the camera and inside the image.
    """

    def __init__(self, k: Union[Sequence[float], np.ndarray], image_size: Tuple[int, int],
                 camera_to_ground: Union[Sequence[float], np.ndarray], grid: GridSpec) -> None:
        import cv2  # noqa: F401  (fail here, not on the first frame, when OpenCV is missing)

        self.k = _check_k(k)
        h, w = (int(v) for v in image_size)
        if h <= 0 or w <= 0:
            raise BevError(f"image size must be positive (h, w), got {tuple(image_size)}")
        self.image_size = (h, w)
        self.camera_to_ground = check_rigid(camera_to_ground)
        self.grid = grid
        xs, ys = grid.cell_centers()
        gx, gy = np.meshgrid(xs, ys)  # (H, W): row = y, column = x
        pts = np.stack([gx, gy, np.zeros_like(gx)], axis=-1).reshape(-1, 3)
        uv, in_front = self.ground_to_pixel(pts)
        uv = uv.reshape(grid.height, grid.width, 2)
        inside = (uv[..., 0] >= 0) & (uv[..., 0] <= w - 1) & (uv[..., 1] >= 0) & (uv[..., 1] <= h - 1)
        self.valid = in_front.reshape(grid.shape) & inside
        self.map_u = np.where(self.valid, uv[..., 0], _OUTSIDE).astype(np.float32)
        self.map_v = np.where(self.valid, uv[..., 1], _OUTSIDE).astype(np.float32)

    def ground_to_pixel(self, points: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Project (N, 3) ground points to (N, 2) float64 pixels (u, v); also (N,) bool: in front.

        Points behind the camera (or within 1 mm of its plane) get NaN pixels and False.
        """
        p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        g2c = np.linalg.inv(self.camera_to_ground)
        cam = p @ g2c[:3, :3].T + g2c[:3, 3]
        in_front = cam[:, 2] > 1e-3
        z = np.where(in_front, cam[:, 2], np.nan)
        proj = cam @ self.k.T
        return np.stack([proj[:, 0] / z, proj[:, 1] / z], axis=1), in_front

    def pixel_to_ground(self, pixels: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Intersect the rays of (N, 2) pixels with the road: (N, 3) ground points and (N,) bool.

        False (and NaN points) for rays that do not hit the road in front of the camera (at or
        above the horizon).
        """
        uv = np.asarray(pixels, dtype=np.float64).reshape(-1, 2)
        rays_cam = np.linalg.solve(self.k, np.vstack([uv.T, np.ones(len(uv))])).T
        r, t = self.camera_to_ground[:3, :3], self.camera_to_ground[:3, 3]
        rays = rays_cam @ r.T
        with np.errstate(divide="ignore", invalid="ignore"):
            s = -t[2] / rays[:, 2]
        hits = np.isfinite(s) & (s > 0)
        pts = t + rays * np.where(hits, s, np.nan)[:, None]
        return pts, hits

    def _remap(self, image: np.ndarray, interpolation: int, border: float) -> np.ndarray:
        import cv2

        if image.shape[:2] != self.image_size:
            raise BevError(f"image is {image.shape[1]}x{image.shape[0]} but the projection was built "
                           f"for {self.image_size[1]}x{self.image_size[0]}")
        return cv2.remap(image, self.map_u, self.map_v, interpolation,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=border)

    def warp_labels(self, labels: np.ndarray) -> np.ndarray:
        """(h, w) uint8 class ids -> (H, W) uint8 grid (nearest pixel); 255 where not valid."""
        import cv2

        labels = np.ascontiguousarray(labels, dtype=np.uint8)
        return self._remap(labels, cv2.INTER_NEAREST, _IGNORE)

    def warp_image(self, image: np.ndarray) -> np.ndarray:
        """(h, w[, C]) uint8 camera image -> (H, W[, C]) uint8 grid (bilinear); 0 where not valid."""
        import cv2

        return self._remap(np.ascontiguousarray(image, dtype=np.uint8), cv2.INTER_LINEAR, 0)

    def warp_probability(self, prob: np.ndarray) -> np.ndarray:
        """(h, w) float road probability -> (H, W) float32 grid (bilinear); NaN where not valid."""
        import cv2

        out = self._remap(np.ascontiguousarray(prob, dtype=np.float32), cv2.INTER_LINEAR, 0.0)
        out[~self.valid] = np.nan
        return out

    def occupancy_from_labels(self, labels: np.ndarray, drivable_ids: Iterable[int]) -> np.ndarray:
        """Occupancy (H, W) int8 of (h, w) uint8 class ids: one remap and one table lookup.

        FREE on ``drivable_ids``, OCCUPIED on other classes, UNKNOWN where not valid.
        """
        return occupancy_lut(drivable_ids)[self.warp_labels(labels)]

    def occupancy_from_probability(self, prob: np.ndarray) -> np.ndarray:
        """Occupancy (H, W) int8 ``round(100 * (1 - p))`` of an (h, w) road probability.

        0 = surely drivable, 100 = surely not, UNKNOWN where not valid: costs a planner can weigh.
        """
        bev = self.warp_probability(prob)
        occ = np.full(bev.shape, UNKNOWN, np.int8)
        ok = self.valid
        occ[ok] = np.rint(100.0 * (1.0 - np.clip(bev[ok], 0.0, 1.0))).astype(np.int8)
        return occ


def occupancy_lut(drivable_ids: Iterable[int]) -> np.ndarray:
    """(256,) int8 read-only table: class id -> FREE / OCCUPIED, and 255 (no pixel) -> UNKNOWN."""
    return _lut(tuple(sorted({int(i) for i in drivable_ids})))


@lru_cache(maxsize=64)
def _lut(drivable_ids: Tuple[int, ...]) -> np.ndarray:
    lut = np.full(256, OCCUPIED, np.int8)
    for i in drivable_ids:
        if not 0 <= int(i) < _IGNORE:
            raise BevError(f"drivable class id {i} must be in 0..254")
        lut[int(i)] = FREE
    lut[_IGNORE] = UNKNOWN
    lut.setflags(write=False)
    return lut


def _key(a: Union[Sequence[float], np.ndarray]) -> Tuple[float, ...]:
    return tuple(float(v) for v in np.asarray(a, dtype=np.float64).ravel())


@lru_cache(maxsize=8)
def _cached(k: Tuple[float, ...], image_size: Tuple[int, int], t: Tuple[float, ...],
            grid: GridSpec) -> GroundProjector:
    return GroundProjector(k, image_size, t, grid)


def projector(k: Union[Sequence[float], np.ndarray], image_size: Tuple[int, int],
              camera_to_ground: Union[Sequence[float], np.ndarray], grid: GridSpec) -> GroundProjector:
    """Return the ``GroundProjector`` for these arguments, built on first use and cached (8 most recent)."""
    return _cached(_key(k), (int(image_size[0]), int(image_size[1])), _key(camera_to_ground), grid)


def occupancy_to_image(occupancy: np.ndarray) -> np.ndarray:
    """(H, W) int8 occupancy -> (H, W) uint8 picture as RViz draws the grid from above.

    Forward (x) to the right, left (y) up: row 0 is the leftmost cells. 255 drivable (and
    probability costs shade from white to black), 0 not drivable, 128 unknown.
    """
    occ = np.asarray(occupancy)
    img = np.where(occ < 0, 128, 255 - np.clip(occ.astype(np.int16), 0, 100) * 255 // 100)
    return np.ascontiguousarray(img[::-1].astype(np.uint8))


def grid_metadata(grid: GridSpec) -> Dict[str, object]:
    """Plain OccupancyGrid ``info`` values for ``grid`` (frame, resolution, size, origin)."""
    return {"frame_id": grid.frame_id, "resolution": grid.resolution, "width": grid.width,
            "height": grid.height, "origin": (*grid.origin, 0.0)}


def kitti_calib_for(image: Union[str, Path], calib_dir: Optional[Union[str, Path]] = None) -> Optional[Path]:
    """Find the calibration file of a KITTI image, or None if there is none.

    ``calib_dir/<stem>.txt`` when ``calib_dir`` is given, else ``calib/`` next to the image or
    beside its folder (the benchmark's ``image_2/../calib`` layout).
    """
    image = Path(image)
    dirs = [Path(calib_dir)] if calib_dir else [image.parent / "calib", image.parent.parent / "calib"]
    for d in dirs:
        cand = d / f"{image.stem}.txt"
        if cand.is_file():
            return cand
    return None
