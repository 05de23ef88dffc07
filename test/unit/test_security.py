"""Security properties of the library.

Model files cannot run code, loading writes nothing, and nothing reaches the network or downloads
weights.

The node-process side (a malicious checkpoint given as the node's ``checkpoint`` parameter, a
checkpoint in a read-only folder, no sockets or programs started) is in test/ros/test_faults.py.
"""

from __future__ import annotations

import ast
import io
import os
import pickle
import socket
import zipfile
from pathlib import Path
from typing import Iterator, List, Tuple

import numpy as np
import pytest
import torch

from pspnet_ros.inference import Segmenter
from pspnet_ros.models import CheckpointError, build_pspnet, load_model, read_checkpoint

PACKAGE = Path(__file__).resolve().parents[2] / "pspnet_ros"


# ----------------------------------------------------------------------------- malicious files

class _Payload:
    """Unpickling this calls ``fn(*args)``: the classic pickle code-execution gadget."""

    def __init__(self, fn, *args) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def _gadgets(marker: Path) -> List[Tuple[str, object]]:
    touch = f"open({str(marker)!r}, 'w').close()"
    return [
        ("os.system", _Payload(os.system, f"touch {marker}")),
        ("builtins.exec", _Payload(exec, touch)),
        ("builtins.eval", _Payload(eval, touch)),
    ]


def _malicious_files(tmp: Path, marker: Path) -> Iterator[Tuple[str, Path]]:
    meta = {"arch": "pspnet", "arch_kwargs": {"num_classes": 2}, "classes": ["a", "b"],
            "palette": [[0, 0, 0], [1, 1, 1]], "ignore_index": 255, "mean": [0, 0, 0], "std": [1, 1, 1]}
    for name, gadget in _gadgets(marker):
        # The payload beside the weights, inside the metadata, and as a "tensor" of the state dict.
        for where, blob in (("top", {"format": "pspnet_ros/1", "model": {}, "meta": meta, "x": gadget}),
                            ("meta", {"format": "pspnet_ros/1", "model": {}, "meta": {**meta, "name": gadget}}),
                            ("state_dict", {"format": "pspnet_ros/1", "model": {"w": gadget}, "meta": meta})):
            path = tmp / f"{name}_{where}.pt"
            torch.save(blob, path)
            yield f"{name} in {where} (zip)", path
        legacy = tmp / f"{name}_legacy.pt"  # torch's pre-1.6 format: a bare pickle stream
        torch.save({"x": gadget}, legacy, _use_new_zipfile_serialization=False)
        yield f"{name} (legacy format)", legacy
        raw = tmp / f"{name}_raw.pkl"
        raw.write_bytes(pickle.dumps(gadget))
        yield f"{name} (plain pickle)", raw
    # A hand-made zip archive with only a data.pkl: no torch.save involved at all.
    handmade = tmp / "handmade.pt"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps(_gadgets(marker)[0][1], protocol=2))
        z.writestr("archive/version", "3\n")
    handmade.write_bytes(buf.getvalue())
    yield "hand-made zip archive", handmade
    # A whole pickled nn.Module (torch.save(model)): common, harmless here, but code-bearing.
    module = tmp / "whole_module.pt"
    torch.save(build_pspnet(num_classes=2, backbone="resnet18", head_channels=8, aux=False), module)
    yield "whole pickled nn.Module", module


@pytest.mark.parametrize("loader", ["read_checkpoint", "load_model", "Segmenter.from_checkpoint"])
def test_malicious_checkpoints_are_refused_without_executing(tmp_path, loader):
    marker = tmp_path / "pwned"
    load = {"read_checkpoint": read_checkpoint, "load_model": load_model,
            "Segmenter.from_checkpoint": lambda p: Segmenter.from_checkpoint(p, device="cpu")}[loader]
    cases = list(_malicious_files(tmp_path, marker))
    assert len(cases) >= 12 and not marker.exists()
    for what, path in cases:
        with pytest.raises(CheckpointError) as err:
            load(path)
        assert str(path) in str(err.value), what  # names the file and the problem
        assert any(w in str(err.value) for w in ("refused", "not a zip archive", "not a readable")), \
            (what, err.value)
        assert not marker.exists(), f"loading {what} executed its payload"


# ----------------------------------------------------------------------------- writes

def _tree(folder: Path):
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def test_loading_and_inference_write_nothing_near_the_checkpoint_or_cwd(tmp_path, tiny_checkpoint, monkeypatch):
    folder = tmp_path / "models"
    folder.mkdir()
    ckpt = folder / "tiny.pt"
    ckpt.write_bytes(tiny_checkpoint.read_bytes())
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    ckpt.chmod(0o444)
    folder.chmod(0o555)  # tests run as root here, so the snapshot is what proves it
    try:
        before = _tree(folder), folder.stat().st_mtime_ns
        for backend in ("torch", "onnxruntime"):
            seg = Segmenter.from_checkpoint(ckpt, device="cpu", inference_size=(32, 64), backend=backend)
            seg.predict(np.zeros((40, 70, 3), np.uint8))
        assert (_tree(folder), folder.stat().st_mtime_ns) == before
        assert list(cwd.iterdir()) == []
    finally:
        folder.chmod(0o755)


# ----------------------------------------------------------------------------- network

class _NoNetwork(Exception):
    pass


def _refuse(*args, **kwargs):
    raise _NoNetwork(f"network access attempted: {args[:2]}")


def test_model_construction_and_inference_never_touch_the_network(monkeypatch, tiny_checkpoint):
    import torchvision
    from torchvision.models import _api as tv_api

    monkeypatch.setattr(socket.socket, "connect", _refuse)
    monkeypatch.setattr(socket, "create_connection", _refuse)
    monkeypatch.setattr(socket, "getaddrinfo", _refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", _refuse)
    monkeypatch.setattr(tv_api.WeightsEnum, "get_state_dict", _refuse)
    assert torchvision.models.resnet18(weights=None) is not None  # the patch does not break builds
    with pytest.raises(_NoNetwork):  # ... and would catch a default-weights build
        torchvision.models.resnet18(weights="DEFAULT")
    for backbone in ("resnet18", "resnet50", "mobilenetv3_large"):
        kw = {"output_stride": 16} if backbone == "mobilenetv3_large" else {}
        build_pspnet(num_classes=2, backbone=backbone, head_channels=8, aux=False, **kw)
    seg = Segmenter.from_checkpoint(tiny_checkpoint, device="cpu", inference_size=(32, 64))
    seg.predict(np.zeros((40, 70, 3), np.uint8))


# ----------------------------------------------------------------------------- static scan

NETWORK_MODULES = {"urllib", "urllib.request", "urllib3", "requests", "http.client", "httpx", "aiohttp",
                   "socket", "ftplib", "smtplib", "webbrowser", "huggingface_hub", "paramiko", "wget"}
DOWNLOAD_CALLS = {"load_state_dict_from_url", "download_url_to_file", "download_url", "urlretrieve",
                  "urlopen", "hf_hub_download", "snapshot_download", "download_and_extract_archive",
                  "load_url"}
UNSAFE_CALLS = {("pickle", "load"), ("pickle", "loads"), ("pickle", "Unpickler"), ("yaml", "load"),
                ("yaml", "unsafe_load"), ("marshal", "loads"), ("dill", "load"), ("joblib", "load")}


def _sources() -> List[Tuple[Path, ast.AST]]:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 20
    return [(f, ast.parse(f.read_text(), str(f))) for f in files]


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else ""


def _kw(call: ast.Call, name: str):
    return next((k.value for k in call.keywords if k.arg == name), None)


def test_static_no_network_or_download_code_in_the_package():
    problems = []
    for path, tree in _sources():
        where = path.relative_to(PACKAGE.parent)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                problems += [f"{where}:{node.lineno} imports {a.name}" for a in node.names
                             if a.name in NETWORK_MODULES or a.name.split(".")[0] in {"requests", "urllib3"}]
            elif isinstance(node, ast.ImportFrom) and node.module:
                if node.module in NETWORK_MODULES or node.module.startswith(("torch.hub", "urllib")):
                    problems.append(f"{where}:{node.lineno} imports from {node.module}")
            elif isinstance(node, ast.Call):
                name = _dotted(node.func)
                if name.split(".")[-1] in DOWNLOAD_CALLS or name.startswith("torch.hub."):
                    problems.append(f"{where}:{node.lineno} calls {name}")
    assert not problems, "\n".join(problems)


def test_static_weights_none_and_safe_deserialization_only():
    problems, torch_loads, weight_args = [], 0, 0
    for path, tree in _sources():
        where = path.relative_to(PACKAGE.parent)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = _dotted(node.func)
            if name == "torch.load":
                torch_loads += 1
                wo = _kw(node, "weights_only")
                if not (isinstance(wo, ast.Constant) and wo.value is True):
                    problems.append(f"{where}:{node.lineno} torch.load without weights_only=True")
            parts = tuple(name.split(".")[-2:])
            if parts in UNSAFE_CALLS:
                problems.append(f"{where}:{node.lineno} calls {name}")
            if name in ("eval", "exec"):
                problems.append(f"{where}:{node.lineno} calls {name}()")
            if name.endswith("load") and _kw(node, "allow_pickle") is not None:
                problems.append(f"{where}:{node.lineno} {name}(allow_pickle=...)")
            for arg in ("weights", "weights_backbone", "pretrained", "pretrained_backbone"):
                value = _kw(node, arg)
                if value is None or (arg == "weights" and name.startswith(("torch.", "np.", "numpy."))):
                    continue  # torch.bincount(weights=...) and friends are not model weights
                weight_args += 1
                if not (isinstance(value, ast.Constant) and value.value in (None, False)):
                    problems.append(f"{where}:{node.lineno} {name}({arg}={ast.unparse(value)})")
    assert not problems, "\n".join(problems)
    assert torch_loads >= 1 and weight_args >= 2  # the scan does see the real calls
