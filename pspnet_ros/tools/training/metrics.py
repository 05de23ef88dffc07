"""Segmentation metrics from one device-side confusion matrix, and KITTI's MaxF / AP."""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch


class ConfusionMatrix:
    """Accumulates a (K, K) int64 matrix on the device: rows = target, columns = prediction.

    Pixels whose target equals ``ignore_index`` (or is otherwise outside [0, K)) are skipped.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, device="cpu") -> None:
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.mat = torch.zeros((num_classes, num_classes), dtype=torch.int64, device=device)

    @torch.inference_mode()
    def update(self, target: torch.Tensor, pred: torch.Tensor) -> None:
        """target, pred: integer tensors of the same shape."""
        if target.shape != pred.shape:
            raise ValueError(f"target {tuple(target.shape)} and prediction {tuple(pred.shape)} differ")
        k = self.num_classes
        t, p = target.reshape(-1).long(), pred.reshape(-1).long().to(target.device)
        valid = (t != self.ignore_index) & (t >= 0) & (t < k)
        idx = t[valid] * k + p[valid]
        self.mat += torch.bincount(idx, minlength=k * k).reshape(k, k).to(self.mat.device)

    def reduce_from_all_processes(self) -> None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(self.mat)

    def compute(self, class_names: Optional[Sequence[str]] = None) -> Dict[str, object]:
        """Per-class IoU/accuracy, mIoU, mAcc, allAcc.

        A class absent from both target and prediction has an undefined IoU (0/0): it is
        reported as None and excluded from the means (counting it as 0 or 1 would bias mIoU).
        A class present in the target only (never predicted) counts as 0.
        """
        m = self.mat.double().cpu()
        tp = m.diag()
        gt = m.sum(1)
        pr = m.sum(0)
        union = gt + pr - tp
        names = list(class_names) if class_names else [str(i) for i in range(self.num_classes)]
        iou: Dict[str, Optional[float]] = {}
        acc: Dict[str, Optional[float]] = {}
        for i, name in enumerate(names):
            iou[name] = float(tp[i] / union[i]) if union[i] > 0 else None
            acc[name] = float(tp[i] / gt[i]) if gt[i] > 0 else None
        ious: List[float] = [v for v in iou.values() if v is not None]
        accs: List[float] = [v for v in acc.values() if v is not None]
        total = float(m.sum())
        return {
            "miou": sum(ious) / len(ious) if ious else 0.0,
            "macc": sum(accs) / len(accs) if accs else 0.0,
            "allacc": float(tp.sum()) / total if total > 0 else 0.0,
            "iou": iou,
            "acc": acc,
        }


class BinaryPRCurve:
    """KITTI road's MaxF and AP from road probabilities, accumulated as histograms.

    The probability range [0, 1] is split into ``bins`` thresholds; per threshold we count
    true positives and false positives (valid pixels only), as the KITTI devkit's
    ``evalExp`` does with its 0..1 threshold sweep.
    """

    def __init__(self, bins: int = 1000, device="cpu") -> None:
        self.bins = bins
        self.pos = torch.zeros(bins, dtype=torch.float64, device=device)
        self.neg = torch.zeros(bins, dtype=torch.float64, device=device)

    @torch.inference_mode()
    def update(self, prob: torch.Tensor, target: torch.Tensor, ignore_index: int = 255) -> None:
        """prob: road probability (any shape, float), target: 0/1 with ignore_index."""
        valid = target != ignore_index
        p = prob[valid].float().clamp(0, 1)
        t = target[valid]
        idx = (p * (self.bins - 1)).round().long()
        self.pos += torch.bincount(idx[t == 1], minlength=self.bins).double().to(self.pos.device)
        self.neg += torch.bincount(idx[t != 1], minlength=self.bins).double().to(self.neg.device)

    def reduce_from_all_processes(self) -> None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(self.pos)
            torch.distributed.all_reduce(self.neg)

    def compute(self) -> Dict[str, float]:
        # Predicting "road" for prob >= threshold_i: cumulative counts from the top bin down.
        tp = self.pos.flip(0).cumsum(0).cpu()
        fp = self.neg.flip(0).cumsum(0).cpu()
        total_pos = float(self.pos.sum())
        if total_pos == 0:
            return {"maxf": 0.0, "ap": 0.0, "precision": 0.0, "recall": 0.0}
        recall = tp / total_pos
        precision = torch.where(tp + fp > 0, tp / (tp + fp).clamp(min=1e-12), torch.ones_like(tp))
        f = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall).clamp(min=1e-12),
                        torch.zeros_like(tp))
        best = int(torch.argmax(f))
        # AP as in the KITTI devkit: mean of the max precision at 11 recall levels 0, 0.1, ..., 1.
        ap = 0.0
        for r in torch.linspace(0, 1, 11):
            mask = recall >= r - 1e-12
            ap += float(precision[mask].max()) if mask.any() else 0.0
        return {"maxf": float(f[best]), "ap": ap / 11, "precision": float(precision[best]),
                "recall": float(recall[best])}
