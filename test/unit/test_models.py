"""Model family: shapes, parameter counts, gradients, argument validation."""

import pytest
import torch

from pspnet_ros.models import (PyramidPooling, build_backbone, build_model, build_pspnet,
                               build_simple_segnet)

torch.set_num_threads(1)


def n_params(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("bins", [(1, 2, 3, 6), (1, 3), (2,)])
def test_ppm_channels_and_bin_sizes(bins):
    ppm = PyramidPooling(2048, bins).eval()
    x = torch.randn(1, 2048, 9, 13)
    out = ppm(x)
    assert ppm.out_channels == 2048 + (2048 // len(bins)) * len(bins)
    assert out.shape == (1, ppm.out_channels, 9, 13)
    assert torch.equal(out[:, :2048], x)  # the input passes through unchanged
    for b, branch in zip(bins, ppm.branches):
        pooled = branch[0](x)
        assert pooled.shape[-2:] == (b, b)
        assert branch[1].out_channels == 2048 // len(bins)


def test_ppm_resnet50_doubles_channels():
    assert PyramidPooling(2048).out_channels == 4096


@pytest.mark.parametrize("name,os_,ch", [("resnet18", 8, 512), ("resnet18", 16, 512),
                                         ("resnet34", 8, 512), ("resnet50", 8, 2048),
                                         ("resnet50", 16, 2048), ("mobilenetv3_large", 16, 960),
                                         ("efficientnet_lite0", 16, 320), ("efficientnet_lite0", 8, 320),
                                         ("efficientnet_lite2", 16, 352)])
def test_backbone_output_stride(name, os_, ch):
    bb = build_backbone(name, output_stride=os_).eval()
    with torch.no_grad():
        f = bb(torch.randn(1, 3, 64, 96))
    assert f["out"].shape == (1, ch, 64 // os_, 96 // os_)
    assert bb.out_channels == ch
    assert f["aux"].shape[1] == bb.aux_channels
    assert f["low"].shape == (1, bb.low_channels, 64 // 4, 96 // 4)  # the skip decoder's input


def test_resnet101_is_dilated_like_resnet50():
    bb = build_backbone("resnet101", output_stride=8).eval()
    with torch.no_grad():
        f = bb(torch.randn(1, 3, 32, 32))
    assert f["out"].shape == (1, 2048, 4, 4) and f["aux"].shape == (1, 1024, 4, 4)


@pytest.mark.parametrize("size", [(65, 97), (201, 201), (64, 64), (33, 47)])
@pytest.mark.parametrize("backbone", ["resnet18", "mobilenetv3_large", "efficientnet_lite0"])
def test_pspnet_output_at_input_size(size, backbone):
    os_ = 8 if backbone == "resnet18" else 16
    m = build_pspnet(num_classes=5, backbone=backbone, output_stride=os_, head_channels=32).eval()
    with torch.no_grad():
        out = m(torch.randn(1, 3, *size))
    assert set(out) == {"out"}
    assert out["out"].shape == (1, 5, *size) and out["out"].dtype == torch.float32


def test_pspnet_resnet50_odd_size():
    m = build_pspnet(num_classes=11).eval()
    with torch.no_grad():
        assert m(torch.randn(1, 3, 65, 97))["out"].shape == (1, 11, 65, 97)


def test_deep_stem():
    m = build_pspnet(num_classes=3, backbone="resnet18", deep_stem=True, head_channels=16)
    assert isinstance(m.backbone.body.conv1, torch.nn.Sequential)
    assert sum(isinstance(mod, torch.nn.Conv2d) and mod.kernel_size == (3, 3) for mod in m.backbone.body.conv1) == 3
    with torch.no_grad():
        assert m.eval()(torch.randn(1, 3, 65, 65))["out"].shape == (1, 3, 65, 65)


def test_aux_only_when_training_or_asked():
    m = build_pspnet(num_classes=4, backbone="resnet18", head_channels=16)
    x = torch.randn(2, 3, 64, 64)
    assert set(m.train()(x)) == {"out", "aux"}
    m.eval()
    with torch.no_grad():
        assert set(m(x)) == {"out"}
        assert m(x, return_aux=True)["aux"].shape == (2, 4, 64, 64)
    no_aux = build_pspnet(num_classes=4, backbone="resnet18", aux=False, head_channels=16).train()
    assert set(no_aux(x)) == {"out"}


def test_gradients_reach_every_parameter():
    m = build_pspnet(num_classes=3, backbone="resnet18", head_channels=16).train()
    out = m(torch.randn(2, 3, 64, 64))
    (out["out"].mean() + out["aux"].mean()).backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"no gradient for {missing}"


def test_resnet50_parameter_counts():
    # Figures of the original PSPNet-ResNet50 for 11 classes with the standard stem.
    assert n_params(build_pspnet(num_classes=11, aux=False)) / 1e6 == pytest.approx(46.6, abs=0.05)
    assert n_params(build_pspnet(num_classes=11, aux=True)) / 1e6 == pytest.approx(49.0, abs=0.05)


def test_aux_head_widths():
    assert build_pspnet(num_classes=11).aux_head[0].out_channels == 256  # 1024 -> 256
    assert build_pspnet(num_classes=11, backbone="resnet18").aux_head[0].out_channels == 64


def test_simple_segnet_shapes():
    m = build_simple_segnet(num_classes=6).eval()
    with torch.no_grad():
        feats = m.backbone(torch.randn(1, 3, 64, 96))
        out = m(torch.randn(1, 3, 65, 97))
    assert feats["out"].shape == (1, 512, 2, 3)  # stride 32: no dilation
    assert set(out) == {"out"} and out["out"].shape == (1, 6, 65, 97)


@pytest.mark.parametrize("kwargs,match", [
    ({"num_classes": 3, "backbone": "vgg16"}, "unknown backbone"),
    ({"num_classes": 1}, "num_classes"),
    ({"num_classes": 0}, "num_classes"),
    ({"num_classes": 2.5}, "num_classes"),
    ({"num_classes": 3, "bins": ()}, "bins"),
    ({"num_classes": 3, "bins": (1, 0)}, "bins"),
    ({"num_classes": 3, "bins": (2, 2)}, "bins"),
    ({"num_classes": 3, "output_stride": 4}, "output_stride"),
    ({"num_classes": 3, "output_stride": 32}, "output_stride"),
    ({"num_classes": 3, "backbone": "mobilenetv3_large", "output_stride": 8}, "output_stride"),
    ({"num_classes": 3, "dropout": 1.5}, "dropout"),
    ({"num_classes": 3, "backbone": "efficientnet_lite0", "output_stride": 32}, "output_stride"),
    ({"num_classes": 3, "backbone": "efficientnet_lite0", "output_stride": 16, "deep_stem": True}, "deep_stem"),
    ({"num_classes": 3, "skip": True, "skip_channels": 0}, "skip_channels"),
])
def test_bad_arguments_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_pspnet(**kwargs)


def test_build_model_by_name():
    with pytest.raises(ValueError, match="unknown architecture"):
        build_model("unet", num_classes=3)
    with pytest.raises(ValueError, match="ResNet"):
        build_simple_segnet(num_classes=3, backbone="mobilenetv3_large")
    assert isinstance(build_model("simple_segnet", num_classes=3), torch.nn.Module)


def test_light_backbone_batchnorm_tracks_statistics():
    # momentum 0.01 (torchvision's ImageNet setting) made from-scratch models collapse in eval mode
    bb = build_backbone("mobilenetv3_large", output_stride=16)
    moms = {m.momentum for m in bb.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert moms == {0.1}


@pytest.mark.parametrize("size", [(64, 96), (33, 47)])
@pytest.mark.parametrize("backbone,os_", [("efficientnet_lite0", 16), ("efficientnet_lite0", 8),
                                          ("mobilenetv3_large", 16), ("resnet18", 8)])
def test_skip_decoder_classifies_at_quarter_resolution(backbone, os_, size):
    m = build_pspnet(num_classes=4, backbone=backbone, output_stride=os_, head_channels=16,
                     skip=True, skip_channels=12).eval()
    seen = {}
    m.decoder.fuse[-1].register_forward_hook(lambda mod, i, o: seen.update(logits=o.shape))
    with torch.no_grad():
        out = m(torch.randn(1, 3, *size))
    assert out["out"].shape == (1, 4, *size)
    # the classifier runs on the stride-4 grid, not the 1/os one
    assert seen["logits"][-2:] == m.backbone(torch.randn(1, 3, *size))["low"].shape[-2:]
    assert m.decoder.project[0].in_channels == m.backbone.low_channels
    # the head stops before its classifier: no num_classes-wide conv before the decoder
    assert not any(isinstance(x, torch.nn.Conv2d) and x.out_channels == 4 for x in m.head)


def test_skip_decoder_gets_gradients_from_the_low_feature():
    m = build_pspnet(num_classes=3, backbone="efficientnet_lite0", output_stride=16,
                     head_channels=16, skip=True, skip_channels=8).train()
    out = m(torch.randn(2, 3, 64, 64))
    out["out"].sum().backward()
    assert m.decoder.project[0].weight.grad.abs().sum() > 0
    assert m.backbone.body.blocks[1][0].conv_pw.weight.grad.abs().sum() > 0


def test_lite_backbone_uses_tf_batchnorm_eps():
    bb = build_backbone("efficientnet_lite1", output_stride=16)
    assert {m.eps for m in bb.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {1e-3}
