"""PSPNet (Zhao et al., CVPR 2017) and the SimpleSegNet baseline, composed from named parts."""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import BACKBONES, RESNETS, build_backbone


class PyramidPooling(nn.Module):
    """Pyramid pooling module.

    For each bin size ``b``: adaptive average pool to ``b x b``, 1x1 conv to
    ``in_channels // len(bins)`` channels, BN, ReLU, bilinear upsample back to the input size.
    The branches are concatenated with the input, so the output has
    ``in_channels + len(bins) * (in_channels // len(bins))`` channels (2048 -> 4096 for ResNet-50).

    Input: (B, C, h, w) float. Output: (B, out_channels, h, w) float.
    Training needs batches of >= 2: the 1x1 bin has one value per channel and sample, and BN
    cannot estimate a variance from a single value.
    """

    def __init__(self, in_channels: int, bins: Sequence[int] = (1, 2, 3, 6)) -> None:
        super().__init__()
        bins = tuple(bins)
        if not bins or any((not isinstance(b, int)) or b < 1 for b in bins):
            raise ValueError(f"bins must be a non-empty sequence of positive ints, got {bins!r}")
        if len(set(bins)) != len(bins):
            raise ValueError(f"bins must not repeat, got {bins!r}")
        reduced = in_channels // len(bins)
        if reduced < 1:
            raise ValueError(f"{len(bins)} bins leave no channels for {in_channels} input channels")
        self.bins = bins
        self.reduced_channels = reduced
        self.out_channels = in_channels + reduced * len(bins)
        self.branches = nn.ModuleList(
            nn.Sequential(
                nn.AdaptiveAvgPool2d(b),
                nn.Conv2d(in_channels, reduced, 1, bias=False),  # BN follows: a bias is redundant
                nn.BatchNorm2d(reduced),
                nn.ReLU(inplace=True),
            )
            for b in bins
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        # align_corners=False: the bins are area averages, their centres sit at cell centres.
        feats = [x] + [F.interpolate(br(x), size=size, mode="bilinear", align_corners=False)
                       for br in self.branches]
        return torch.cat(feats, dim=1)


class PSPHead(nn.Sequential):
    """3x3 conv to ``mid_channels``, BN, ReLU, dropout, 1x1 conv to classes.

    Input: (B, in_channels, h, w) float. Output: (B, num_classes, h, w) float logits.
    """

    def __init__(self, in_channels: int, num_classes: int, mid_channels: int = 512,
                 dropout: float = 0.1) -> None:
        super().__init__(
            nn.Conv2d(in_channels, mid_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(mid_channels),
            nn.ReLU(inplace=True),
            nn.Dropout2d(dropout),
            nn.Conv2d(mid_channels, num_classes, 1),
        )


class SkipDecoder(nn.Module):
    """Sharpens the context features with the stride-4 backbone feature (as DeepLabv3+ does).

    The PSP head's features (B, C, h, w) at 1/os are upsampled to the 1/4 feature's size,
    concatenated with a 1x1 projection of it (few channels, so the context dominates) and
    classified by a 3x3 conv, BN, ReLU, dropout, 1x1 conv. At output stride 16 the head alone
    predicts on a 16-pixel grid, which is why thin objects (poles) and region edges (the road
    border) blur; the 1/4 feature puts them back on a 4-pixel grid.

    Input: ``x`` (B, in_channels, h, w), ``low`` (B, low_channels, H/4, W/4) float.
    Output: (B, num_classes, H/4, W/4) float logits.
    """

    def __init__(self, in_channels: int, low_channels: int, num_classes: int,
                 low_proj: int = 32, mid_channels: int = 96, dropout: float = 0.1) -> None:
        super().__init__()
        self.project = nn.Sequential(
            nn.Conv2d(low_channels, low_proj, 1, bias=False), nn.BatchNorm2d(low_proj), nn.ReLU(inplace=True))
        self.fuse = nn.Sequential(
            nn.Conv2d(in_channels + low_proj, mid_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(mid_channels),
            nn.ReLU(inplace=True),
            nn.Dropout2d(dropout),
            nn.Conv2d(mid_channels, num_classes, 1),
        )

    def forward(self, x: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.fuse(torch.cat([x, self.project(low)], dim=1))


class AuxHead(PSPHead):
    """Deep-supervision head on the layer3 features (1024 -> 256 -> classes for ResNet-50)."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.1) -> None:
        super().__init__(in_channels, num_classes, mid_channels=max(in_channels // 4, 32),
                         dropout=dropout)


class SegmentationModel(nn.Module):
    """Backbone + main head (+ optional aux head), logits upsampled to the input size.

    ``forward(x)`` with x (B, 3, H, W) float returns ``{"out": (B, K, H, W)}`` float logits, plus
    ``"aux"`` (same shape) when an aux head exists and the model is training or
    ``return_aux=True``. Any H, W are accepted (not only 8k+1).
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, aux_head: Optional[nn.Module],
                 context: Optional[nn.Module] = None, decoder: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.ppm = context if context is not None else nn.Identity()
        self.head = head
        self.aux_head = aux_head
        self.decoder = decoder

    def forward(self, x: torch.Tensor, return_aux: Optional[bool] = None) -> Dict[str, torch.Tensor]:
        size = x.shape[-2:]
        feats = self.backbone(x)
        logits = self.head(self.ppm(feats["out"]))
        if self.decoder is not None:
            logits = self.decoder(logits, feats["low"])
        result = {"out": F.interpolate(logits, size=size, mode="bilinear", align_corners=False)}
        want_aux = self.training if return_aux is None else return_aux
        if want_aux and self.aux_head is not None:
            aux = self.aux_head(feats["aux"])
            result["aux"] = F.interpolate(aux, size=size, mode="bilinear", align_corners=False)
        return result


def _check_common(num_classes: int, backbone: str) -> None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")


def build_pspnet(*, num_classes: int, backbone: str = "resnet50", output_stride: int = 8,
                 bins: Sequence[int] = (1, 2, 3, 6), aux: bool = True, deep_stem: bool = False,
                 dropout: float = 0.1, head_channels: int = 512, skip: bool = False,
                 skip_channels: int = 96) -> SegmentationModel:
    """PSPNet with a dilated backbone.

    ``backbone``: resnet18/34/50/101 and efficientnet_lite0/1/2 (output_stride 8 or 16) or
    mobilenetv3_large (16 only).
    ``head_channels``: width of the 3x3 conv in the main head (512 in the paper; the light CPU
    models use less).
    ``skip``: add a ``SkipDecoder`` (``skip_channels`` wide) that refines the head's features
    with the stride-4 backbone feature before classifying (sharper edges and thin objects at
    output stride 16, for a few percent more compute).
    """
    _check_common(num_classes, backbone)
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    if not isinstance(head_channels, int) or head_channels < 1:
        raise ValueError(f"head_channels must be a positive int, got {head_channels!r}")
    if not isinstance(skip_channels, int) or skip_channels < 1:
        raise ValueError(f"skip_channels must be a positive int, got {skip_channels!r}")
    body = build_backbone(backbone, output_stride=output_stride, deep_stem=deep_stem)
    ppm = PyramidPooling(body.out_channels, bins)
    decoder = None
    if skip:
        # The head stops before its classifier: the decoder classifies at 1/4.
        head = nn.Sequential(*list(PSPHead(ppm.out_channels, 2, mid_channels=head_channels,
                                           dropout=dropout))[:3])
        decoder = SkipDecoder(head_channels, body.low_channels, num_classes,
                              mid_channels=skip_channels, dropout=dropout)
    else:
        head = PSPHead(ppm.out_channels, num_classes, mid_channels=head_channels, dropout=dropout)
    aux_head = AuxHead(body.aux_channels, num_classes, dropout=dropout) if aux else None
    return SegmentationModel(body, head, aux_head, context=ppm, decoder=decoder)


def build_simple_segnet(*, num_classes: int, backbone: str = "resnet18") -> SegmentationModel:
    """Build the original project's baseline: undilated ResNet (stride 32), 1x1 classifier, upsample."""
    _check_common(num_classes, backbone)
    if backbone not in RESNETS:
        raise ValueError(f"SimpleSegNet needs a ResNet backbone, got {backbone!r}")
    body = build_backbone(backbone, dilated=False)
    return SegmentationModel(body, nn.Conv2d(body.out_channels, num_classes, 1), None)


ARCHITECTURES = {"pspnet": build_pspnet, "simple_segnet": build_simple_segnet}


def build_model(arch: str, **kwargs) -> SegmentationModel:
    """Build a model by architecture name (as stored in checkpoint metadata)."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[arch](**kwargs)
