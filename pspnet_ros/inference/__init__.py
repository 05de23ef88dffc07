"""ROS-free inference: ``Segmenter`` (synchronous) and ``RealtimeEngine`` (threaded, frame
dropping, CUDA streams). Nothing here imports rclpy."""

from ..errors import InputError
from .engine import RealtimeEngine
from .segmenter import Segmenter
from .types import DEFAULT_OUTPUTS, OUTPUT_KINDS, EngineConfig, FrameError, FrameResult

__all__ = ["DEFAULT_OUTPUTS", "EngineConfig", "FrameError", "FrameResult", "InputError",
           "OUTPUT_KINDS", "RealtimeEngine", "Segmenter"]
