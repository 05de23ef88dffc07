"""Backbones: dilated torchvision ResNets, a dilated MobileNetV3-Large and timm EfficientNet-Lite.

Every backbone returns ``{"low": (B, C_low, H/4, W/4), "aux": (B, C_aux, H/s_aux, W/s_aux),
"out": (B, C_out, H/os, W/os)}`` float feature maps and exposes ``out_channels`` /
``aux_channels`` / ``low_channels`` so heads can be sized without running a forward pass.
``low`` (the stride-4 feature) feeds the optional skip decoder of ``build_pspnet``.
"""

from __future__ import annotations

from typing import Dict

import torch
from torch import nn
from torchvision.models import mobilenet_v3_large, resnet
from torchvision.models._utils import IntermediateLayerGetter

RESNETS = {
    "resnet18": (resnet.resnet18, 512, 256),
    "resnet34": (resnet.resnet34, 512, 256),
    "resnet50": (resnet.resnet50, 2048, 1024),
    "resnet101": (resnet.resnet101, 2048, 1024),
}
LIGHT_BACKBONES = ("mobilenetv3_large",)
# EfficientNet-Lite (Tan & Le; the TF-Lite friendly variant: ReLU6, no squeeze-excitation),
# built by timm. ImageNet weights come from ``pspnet_ros.tools.training.pretrained``.
EFFICIENTNET_LITE = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
BACKBONES = tuple(RESNETS) + LIGHT_BACKBONES + EFFICIENTNET_LITE

# Input normalization each backbone family expects, as (mean, std) on [0, 1] RGB. The
# EfficientNet-Lite weights were trained in TensorFlow on (x * 255 - 127) / 128.
IMAGENET_NORM = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
LITE_NORM = ((127.0 / 255,) * 3, (128.0 / 255,) * 3)


def backbone_normalization(name: str):
    """``(mean, std)`` (3 floats each, [0, 1] RGB) the backbone ``name`` expects."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    return LITE_NORM if name in EFFICIENTNET_LITE else IMAGENET_NORM


def _dilate_basic_layer(layer: nn.Sequential, dilation: int, first_dilation: int) -> None:
    """Turn a stride-2 BasicBlock stage into a stride-1 dilated one, in place.

    torchvision's ``replace_stride_with_dilation`` only supports Bottleneck blocks (BasicBlock
    raises "Dilation > 1 not supported"), so ResNet-18/34 are dilated by hand: the strided
    convolutions lose their stride and every 3x3 conv gets the dilation (the first block keeps
    the previous stage's dilation, as in torchvision's Bottleneck path and DeepLab).
    """
    for i, block in enumerate(layer):
        d = first_dilation if i == 0 else dilation
        for conv in (block.conv1, block.conv2):
            conv.stride = (1, 1)
            conv.dilation = (d, d)
            conv.padding = (d, d)
        if block.downsample is not None:
            block.downsample[0].stride = (1, 1)
        block.stride = 1


def _replace_stem_with_deep_stem(net: resnet.ResNet) -> None:
    """Replace the 7x7 stem by three 3x3 convs (64, 64, 128 channels) as in the PSPNet paper.

    The stem then outputs 128 channels, so layer1 is rebuilt for that input width.
    """
    net.conv1 = nn.Sequential(
        nn.Conv2d(3, 64, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(inplace=True),
        nn.Conv2d(64, 64, 3, padding=1, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(inplace=True),
        nn.Conv2d(64, 128, 3, padding=1, bias=False),
    )
    net.bn1 = nn.BatchNorm2d(128)
    block = type(net.layer1[0])
    net.inplanes, net.dilation = 128, 1
    net.layer1 = net._make_layer(block, 64, len(net.layer1))


class ResNetBackbone(nn.Module):
    """Dilated ResNet returning layer3 (``aux``) and layer4 (``out``) features."""

    def __init__(self, name: str, output_stride: int = 8, deep_stem: bool = False,
                 dilated: bool = True) -> None:
        super().__init__()
        factory, out_ch, aux_ch = RESNETS[name]
        # Which of layer2/3/4 trade stride for dilation: OS8 -> layer3+4, OS16 -> layer4.
        replace = [False, output_stride == 8, output_stride in (8, 16)] if dilated else [False] * 3
        bottleneck = name in ("resnet50", "resnet101")
        net = factory(weights=None, replace_stride_with_dilation=replace if bottleneck else None)
        if not bottleneck and dilated:
            dil = 1
            for stage, flag in zip((net.layer2, net.layer3, net.layer4), replace):
                if flag:
                    prev, dil = dil, dil * 2
                    _dilate_basic_layer(stage, dil, prev)
        if deep_stem:
            _replace_stem_with_deep_stem(net)
        self.body = IntermediateLayerGetter(
            net, return_layers={"layer1": "low", "layer3": "aux", "layer4": "out"})
        self.out_channels = out_ch
        self.aux_channels = aux_ch
        self.low_channels = out_ch // 8  # layer1: 64 (BasicBlock) or 256 (Bottleneck)
        self.output_stride = output_stride if dilated else 32

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        return self.body(x)


class MobileNetV3Backbone(nn.Module):
    """MobileNetV3-Large with its last stage dilated (output stride 16), as in LR-ASPP.

    ``aux`` is the 40-channel 1/8 feature (end of the third stage), ``out`` the 960-channel
    1/16 feature.
    """

    def __init__(self) -> None:
        super().__init__()
        features = mobilenet_v3_large(weights=None, dilated=True).features
        # torchvision builds MobileNetV3 with BatchNorm momentum 0.01 (tuned for long ImageNet
        # runs). Trained from scratch for a few thousand iterations, the running statistics then
        # lag far behind the weights and eval-mode outputs collapse to one class; 0.1 (the
        # PyTorch default, as in the ResNets) tracks them.
        for m in features.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = 0.1
        # Stage ends are the blocks just before a stride-2 ("_is_cn") block.
        stage_idx = [0] + [i for i, b in enumerate(features) if getattr(b, "_is_cn", False)]
        stage_idx.append(len(features) - 1)
        low_pos, aux_pos, out_pos = stage_idx[-5], stage_idx[-4], stage_idx[-1]
        self.features = features[: out_pos + 1]
        self.low_pos = low_pos
        self.aux_pos = aux_pos
        self.out_channels = features[out_pos].out_channels
        self.aux_channels = features[aux_pos].out_channels
        self.low_channels = features[low_pos].out_channels
        self.output_stride = 16

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        low = aux = None
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i == self.low_pos:
                low = x
            elif i == self.aux_pos:
                aux = x
        return {"low": low, "aux": aux, "out": x}


class EfficientNetLiteBackbone(nn.Module):
    """timm EfficientNet-Lite, features only, dilated to output stride 16 or 8.

    ``low`` is the stride-4 stage (24 channels for Lite0), ``aux`` the stride-16 stage (112 for
    Lite0; dilated, not strided, at OS8), ``out`` the last stage (320 for Lite0) at
    ``output_stride``. BatchNorm eps is 1e-3: the ImageNet weights are ported from TensorFlow,
    whose BN adds 1e-3 (timm's ``efficientnet_lite*`` builds 1e-5, which shifts every
    normalized activation of the pretrained model). ``body`` holds exactly the tensors that
    ``pretrained.load_imagenet_backbone`` fills.
    """

    BN_EPS = 1e-3

    def __init__(self, name: str, output_stride: int = 16) -> None:
        super().__init__()
        timm = _import_timm()
        self.body = timm.create_model(name, pretrained=False, features_only=True,
                                      out_indices=(1, 3, 4), output_stride=output_stride,
                                      bn_eps=self.BN_EPS)
        low, aux, out = self.body.feature_info.channels()
        self.low_channels, self.aux_channels, self.out_channels = low, aux, out
        self.output_stride = output_stride
        self.name = name

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        low, aux, out = self.body(x)
        return {"low": low, "aux": aux, "out": out}


def _import_timm():
    try:
        import timm
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("EfficientNet-Lite backbones need timm: pip install timm "
                          "(or pip install -e '.[train]')") from None
    return timm


def build_backbone(name: str, output_stride: int = 8, deep_stem: bool = False,
                   dilated: bool = True) -> nn.Module:
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    if name in LIGHT_BACKBONES:
        if output_stride != 16:
            raise ValueError(f"backbone {name!r} supports output_stride=16 only, got {output_stride}")
        if deep_stem:
            raise ValueError(f"deep_stem applies to ResNet backbones, not {name!r}")
        return MobileNetV3Backbone()
    if name in EFFICIENTNET_LITE:
        if output_stride not in (8, 16):
            raise ValueError(f"backbone {name!r} supports output_stride 8 or 16, got {output_stride!r}")
        if deep_stem or not dilated:
            raise ValueError(f"deep_stem and dilated=False apply to ResNet backbones, not {name!r}")
        return EfficientNetLiteBackbone(name, output_stride=output_stride)
    if dilated and output_stride not in (8, 16):
        raise ValueError(f"output_stride must be 8 or 16, got {output_stride!r}")
    return ResNetBackbone(name, output_stride=output_stride, deep_stem=deep_stem, dilated=dilated)
