"""`pspnet eval` on the shipped KITTI road model over real frames, and the `auto` model choice."""

import json


from pspnet_ros.models import load_model
from pspnet_ros.paths import resolve_checkpoint, shipped_model
from pspnet_ros.tools.training.evaluate import main as eval_main


def test_auto_checkpoint_is_the_shipped_pretrained_lite_model_on_cpu():
    path = resolve_checkpoint("auto", dataset="kitti_road", device="cpu")
    assert path == shipped_model("kitti_road", "cpu") and path.is_file()
    _, meta = load_model(path)
    assert meta["dataset"] == "kitti_road" and meta["classes"] == ["not_road", "road"]
    assert meta["arch_kwargs"]["backbone"] == "efficientnet_lite0"  # ImageNet-pretrained Lite0
    assert meta["mean"] == [127 / 255] * 3  # its normalization travels in the checkpoint
    assert "training" in meta and meta["metrics"]["miou"] > 0.93 and meta["metrics"]["maxf"] > 0.96


def test_eval_shipped_kitti_model_on_three_real_val_frames(tmp_path, data_root):
    out = tmp_path / "m.json"
    rc = eval_main(["--dataset", "kitti_road", "--root", str(data_root), "--split", "val",
                    "--limit", "3", "--threads", "1", "--json", str(out)])
    assert rc == 0
    m = json.loads(out.read_text())
    assert set(m) >= {"miou", "macc", "allacc", "iou", "maxf", "ap"}
    assert set(m["iou"]) == {"not_road", "road"}
    # a trained model, not a constant predictor: both classes found, road well above chance
    assert m["iou"]["road"] > 0.4 and m["miou"] > 0.6 and 0.5 < m["maxf"] <= 1.0
    assert m["images"] == 3


def test_eval_bev_scores_the_birds_eye_view_next_to_the_perspective(tmp_path, data_root):
    out = tmp_path / "m.json"
    rc = eval_main(["--dataset", "kitti_road", "--root", str(data_root), "--split", "val",
                    "--limit", "2", "--threads", "1", "--bev", "--json", str(out)])
    assert rc == 0
    m = json.loads(out.read_text())
    assert 0.5 < m["maxf"] <= 1.0  # the perspective numbers stay
    assert set(m["bev"]) == {"maxf", "ap", "precision", "recall", "images", "skipped"}
    assert m["bev"]["images"] == 2 and m["bev"]["skipped"] == []
    assert all(0.5 < m["bev"][k] <= 1.0 for k in ("maxf", "ap", "precision", "recall"))


def test_eval_refuses_dataset_mismatch(data_root, capsys):
    rc = eval_main(["--checkpoint", str(shipped_model("kitti_road", "cpu")), "--dataset", "camvid",
                    "--root", str(data_root), "--limit", "1"])
    assert rc == 2
