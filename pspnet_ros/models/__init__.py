"""PSPNet model family (pure PyTorch, no I/O besides checkpoint files)."""

from .backbones import BACKBONES, build_backbone
from .checkpoint import CheckpointError, load_model, read_checkpoint, save_checkpoint, validate_meta
from .pspnet import (ARCHITECTURES, AuxHead, PSPHead, PyramidPooling, SegmentationModel,
                     build_model, build_pspnet, build_simple_segnet)

__all__ = [
    "ARCHITECTURES", "AuxHead", "BACKBONES", "CheckpointError", "PSPHead", "PyramidPooling",
    "SegmentationModel", "build_backbone", "build_model", "build_pspnet", "build_simple_segnet",
    "load_model", "read_checkpoint", "save_checkpoint", "validate_meta",
]
