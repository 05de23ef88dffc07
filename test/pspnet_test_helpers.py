"""Helpers importable from any test layer.

A uniquely named module: `conftest` names collide between test/ and test/gpu/ when the whole tree is
collected.
"""

from __future__ import annotations

from pathlib import Path


def make_tiny_checkpoint(path: Path, dataset: str = "kitti_road", backbone: str = "resnet18",
                         seed: int = 0) -> Path:
    """Return a small random PSPNet checkpoint with real dataset metadata."""
    import torch

    from pspnet_ros.tools.data.classes import dataset_meta
    from pspnet_ros.models import build_pspnet, save_checkpoint

    torch.manual_seed(seed)
    meta = dataset_meta(dataset)
    kwargs = {"num_classes": len(meta["classes"]), "backbone": backbone, "output_stride": 8,
                  "head_channels": 32, "aux": False}
    if backbone == "mobilenetv3_large":
        kwargs["output_stride"] = 16
    if backbone.startswith("efficientnet"):  # as the shipped Lite models: OS16 + skip decoder
        from pspnet_ros.models.backbones import backbone_normalization

        kwargs.update(output_stride=16, skip=True, skip_channels=16)
        mean, std = backbone_normalization(backbone)
        meta.update(mean=list(mean), std=list(std))
    model = build_pspnet(**kwargs).eval()
    meta.update(arch="pspnet", arch_kwargs=kwargs, input_size=[96, 320], metrics={})
    return save_checkpoint(path, model, meta)
