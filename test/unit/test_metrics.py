"""Metrics against values computed by hand."""

import pytest
import torch

from pspnet_ros.tools.training.metrics import BinaryPRCurve, ConfusionMatrix


def test_confusion_matrix_by_hand():
    # 3 classes; class 2 absent from target and prediction; one ignored pixel.
    target = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 255]])
    pred = torch.tensor([[0, 1, 1, 1], [0, 0, 1, 2]])
    cm = ConfusionMatrix(3)
    cm.update(target, pred)
    assert cm.mat.tolist() == [[2, 1, 0], [1, 3, 0], [0, 0, 0]]
    r = cm.compute(["a", "b", "c"])
    # IoU a = 2 / (3 + 3 - 2) = 0.5; IoU b = 3 / (4 + 4 - 3) = 0.6; c undefined (absent) -> None
    assert r["iou"] == {"a": pytest.approx(0.5), "b": pytest.approx(0.6), "c": None}
    assert r["miou"] == pytest.approx(0.55)
    assert r["acc"]["a"] == pytest.approx(2 / 3) and r["acc"]["b"] == pytest.approx(3 / 4)
    assert r["macc"] == pytest.approx((2 / 3 + 3 / 4) / 2)
    assert r["allacc"] == pytest.approx(5 / 7)


def test_class_in_target_never_predicted_counts_zero():
    cm = ConfusionMatrix(2)
    cm.update(torch.tensor([0, 1, 1]), torch.tensor([0, 0, 0]))
    r = cm.compute()
    assert r["iou"]["1"] == 0.0 and r["iou"]["0"] == pytest.approx(1 / 3)
    assert r["miou"] == pytest.approx(1 / 6)


def test_predicted_but_absent_class_counts_zero():
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([0, 0]), torch.tensor([0, 2]))
    r = cm.compute()
    assert r["iou"]["2"] == 0.0 and r["iou"]["1"] is None and r["miou"] == pytest.approx(0.25)


def test_accumulates_and_rejects_shape_mismatch():
    cm = ConfusionMatrix(2)
    cm.update(torch.tensor([0, 1]), torch.tensor([0, 1]))
    cm.update(torch.tensor([1]), torch.tensor([0]))
    assert cm.mat.tolist() == [[1, 0], [1, 1]]
    with pytest.raises(ValueError, match="differ"):
        cm.update(torch.zeros(3), torch.zeros(4))


def test_maxf_and_ap_perfect_and_by_hand():
    pr = BinaryPRCurve(bins=11)
    target = torch.tensor([1, 1, 0, 0, 255])
    pr.update(torch.tensor([0.9, 0.8, 0.1, 0.2, 0.99]), target)
    r = pr.compute()
    assert r["maxf"] == pytest.approx(1.0) and r["ap"] == pytest.approx(1.0)

    pr = BinaryPRCurve(bins=11)
    # probs 0.9 (pos), 0.6 (neg), 0.3 (pos). Thresholds: >=0.9 -> P=1,R=.5,F=.667;
    # >=0.6 -> P=.5,R=.5; >=0.3 -> P=2/3,R=1,F=.8 -> MaxF 0.8.
    pr.update(torch.tensor([0.9, 0.6, 0.3]), torch.tensor([1, 0, 1]))
    r = pr.compute()
    assert r["maxf"] == pytest.approx(0.8)
    # 11-point AP: recall levels 0..0.5 -> max precision 1.0 (6 levels), 0.6..1.0 -> 2/3 (5 levels)
    assert r["ap"] == pytest.approx((6 * 1.0 + 5 * 2 / 3) / 11)
