"""Checkpoint round trip and the specific errors for bad files."""

import os

import pytest
import torch

from pspnet_ros.tools.data.classes import dataset_meta
from pspnet_ros.models import CheckpointError, build_pspnet, load_model, read_checkpoint, save_checkpoint

torch.set_num_threads(1)
KW = {"num_classes": 2, "backbone": "resnet18", "output_stride": 8, "head_channels": 16, "aux": True}


def make(path, half=False, **meta_over):
    torch.manual_seed(0)
    m = build_pspnet(**KW).eval()
    meta = dict(dataset_meta("kitti_road"), arch="pspnet", arch_kwargs=KW, input_size=[64, 96],
                metrics={"miou": 0.5})
    meta.update(meta_over)
    save_checkpoint(path, m, meta, half=half)
    return m


def test_round_trip_identical_outputs(tmp_path):
    m = make(tmp_path / "a.pt")
    loaded, meta = load_model(tmp_path / "a.pt")
    x = torch.randn(1, 3, 65, 97)
    with torch.no_grad():
        assert torch.equal(m(x)["out"], loaded(x)["out"])
    assert not loaded.training
    assert meta["classes"] == ["not_road", "road"] and meta["palette"][1] == [255, 0, 255]
    assert meta["mean"] == pytest.approx([0.485, 0.456, 0.406]) and meta["ignore_index"] == 255
    assert meta["input_size"] == [64, 96] and meta["metrics"]["miou"] == 0.5


def test_half_checkpoint_loads_as_fp32_and_is_close(tmp_path):
    m = make(tmp_path / "h.pt", half=True)
    blob = read_checkpoint(tmp_path / "h.pt")
    assert all(v.dtype == torch.float16 for v in blob["model"].values() if v.is_floating_point())
    loaded, _ = load_model(tmp_path / "h.pt")
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert (m(x)["out"].argmax(1) == loaded(x)["out"].argmax(1)).float().mean() > 0.99


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match=r"nope\.pt.*does not exist"):
        load_model(tmp_path / "nope.pt")


def test_empty_and_truncated_and_garbage(tmp_path):
    make(tmp_path / "ok.pt")
    data = (tmp_path / "ok.pt").read_bytes()
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.pt").write_text("definitely not a checkpoint")
    with pytest.raises(CheckpointError, match="empty"):
        load_model(tmp_path / "empty.pt")
    for name in ("trunc.pt", "text.pt"):
        with pytest.raises(CheckpointError, match=name.replace(".", r"\.") + ".*(corrupt|not a)"):
            load_model(tmp_path / name)


def test_plain_state_dict_is_not_a_checkpoint(tmp_path):
    torch.save(build_pspnet(**KW).state_dict(), tmp_path / "sd.pt")
    with pytest.raises(CheckpointError, match="not a pspnet_ros checkpoint"):
        load_model(tmp_path / "sd.pt")


def test_class_mismatch(tmp_path):
    make(tmp_path / "a.pt")
    with pytest.raises(CheckpointError, match="do not match"):
        load_model(tmp_path / "a.pt", expected_classes=["sky", "road"])


def test_architecture_mismatch(tmp_path):
    make(tmp_path / "a.pt")
    blob = torch.load(tmp_path / "a.pt", weights_only=True)
    blob["meta"]["arch_kwargs"] = dict(KW, backbone="resnet34")
    torch.save(blob, tmp_path / "b.pt")
    with pytest.raises(CheckpointError, match=r"b\.pt.*do not match the architecture"):
        load_model(tmp_path / "b.pt")


def test_meta_inconsistent_classes(tmp_path):
    with pytest.raises(CheckpointError, match="class names"):
        make(tmp_path / "a.pt", classes=["a", "b", "c"])


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_without_executing(tmp_path):
    marker = tmp_path / "pwned"
    evil = _Evil()
    evil.marker = marker
    payload = {"format": "pspnet_ros/1", "model": {}, "meta": {}, "x": evil}
    torch.save(payload, tmp_path / "evil.pt")
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="refused"):
        load_model(tmp_path / "evil.pt")
    assert not marker.exists(), "loading executed code from the checkpoint"


def test_atomic_save_leaves_no_temp_files(tmp_path):
    make(tmp_path / "a.pt")
    make(tmp_path / "a.pt")  # overwrite
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt"]
