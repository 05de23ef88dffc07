"""ROS-free inference: ``Segmenter`` (synchronous) and ``RealtimeEngine`` (threaded, frame dropping, CUDA streams).

Nothing here imports rclpy.

The names below load on first use, so the torch-free helpers (``inference.inputs``: the
compressed-image checks the bag tools and the node share) import without torch.
"""

from ..errors import InputError

_LAZY = {"RealtimeEngine": ".engine", "Segmenter": ".segmenter", "DEFAULT_OUTPUTS": ".types",
         "OUTPUT_KINDS": ".types", "EngineConfig": ".types", "FrameError": ".types",
         "FrameResult": ".types"}

__all__ = ["DEFAULT_OUTPUTS", "EngineConfig", "FrameError", "FrameResult", "InputError",
           "OUTPUT_KINDS", "RealtimeEngine", "Segmenter"]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
